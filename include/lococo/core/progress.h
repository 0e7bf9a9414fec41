// A one-line progress bar on stderr: done/total, rate, ETA. Silent when
// disabled (--quiet, --json) and redrawn at most every 100 ms; on a terminal it
// rewrites its line, otherwise it prints a line every few seconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace lococo {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "tok", bool enabled = true);
  ~Progress();
  void set(int64_t done, const std::string& extra = "");
  void add(int64_t n, const std::string& extra = "") { set(done_ + n, extra); }
  void finish(const std::string& extra = "");
  double elapsed_seconds() const;

 private:
  void draw(bool final);
  std::string label_, unit_, extra_;
  int64_t total_ = 0, done_ = 0;
  bool enabled_ = true, tty_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace lococo
