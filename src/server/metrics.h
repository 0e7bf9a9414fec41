// Internal to the server: request and generation counters, rendered in the
// Prometheus text format for /metrics.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace lococo::server_detail {

class Metrics {
 public:
  void count_request(const std::string& endpoint, int status);
  void count_generation(int64_t tokens_in, int64_t tokens_out, double seconds);
  // A prompt: tokens read through the model, and tokens a kept state had read already.
  void count_prompt(int64_t read, int64_t reused) {
    prompt_read_ += read;
    prompt_reused_ += reused;
  }
  void add_cache_bytes(int64_t delta) { cache_bytes_ += delta; }
  std::string render(int busy, int waiting);

 private:
  static constexpr std::array<double, 10> kBuckets = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t tokens_in_ = 0, tokens_out_ = 0, latency_count_ = 0;
  double latency_sum_ = 0;
  std::array<uint64_t, kBuckets.size()> latency_buckets_{};
  std::atomic<int64_t> cache_bytes_{0};
  std::atomic<uint64_t> prompt_read_{0}, prompt_reused_{0};
};

}  // namespace lococo::server_detail
