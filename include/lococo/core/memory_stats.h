// Process memory as the kernel reports it (Linux /proc), for benchmarks and
// evaluation reports: the resident set now and its peak, which can be reset so
// that each run of an evaluation gets its own peak.
#pragma once

#include <cstdint>

namespace lococo {

int64_t current_rss_bytes();  // VmRSS; 0 when /proc is unavailable
int64_t peak_rss_bytes();     // VmHWM: the peak since start or since the last reset
// Resets the peak to the current RSS (writes 5 to /proc/self/clear_refs); false
// when the kernel refuses, in which case peaks are since process start.
bool reset_peak_rss();

// Fixes glibc malloc's thresholds for the whole process (called first in
// main). By default glibc raises its mmap threshold each time a large block is
// freed, so the per-chunk buffers of a long stream move from fresh mappings to
// the heap partway through, and the heap's free space fragments and stays
// resident: RSS creeps up with the input. With fixed thresholds (blocks up to
// 32 MiB from the heap, the heap's top kept up to 128 MiB) the working set is
// reached in the first chunks and stays flat, and no page is faulted in again.
// Malloc arenas are limited to one per core: each thread that met contention
// got its own (8 per core by default), and every arena keeps its own freed
// memory, so a server's connection threads held hundreds of MiB of idle heap.
void keep_heap_steady();

}  // namespace lococo
