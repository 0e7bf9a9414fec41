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

}  // namespace lococo
