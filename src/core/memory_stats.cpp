#include "lococo/core/memory_stats.h"

#include <malloc.h>

#include <algorithm>
#include <thread>

#include <fstream>
#include <string>

namespace lococo {
namespace {

// A "Name:   1234 kB" line of /proc/self/status, in bytes.
int64_t status_field_bytes(const std::string& name) {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == name + ":") {
      int64_t kib = 0;
      in >> kib;
      return kib * 1024;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

}  // namespace

int64_t current_rss_bytes() { return status_field_bytes("VmRSS"); }
int64_t peak_rss_bytes() { return status_field_bytes("VmHWM"); }

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

void keep_heap_steady() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
  mallopt(M_ARENA_MAX, static_cast<int>(std::max(2u, std::thread::hardware_concurrency())));
}

}  // namespace lococo
