#include "server/metrics.h"

#include <fmt/format.h>

namespace lococo::server_detail {

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::count_generation(int64_t tokens_in, int64_t tokens_out, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  tokens_in_ += tokens_in;
  tokens_out_ += tokens_out;
  latency_sum_ += seconds;
  ++latency_count_;
  for (size_t i = 0; i < kBuckets.size(); ++i)
    if (seconds <= kBuckets[i]) ++latency_buckets_[i];
}

std::string Metrics::render(int busy, int waiting) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out += "# HELP lococo_requests_total HTTP requests by endpoint and status.\n# TYPE lococo_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out += fmt::format("lococo_requests_total{{endpoint=\"{}\",code=\"{}\"}} {}\n", key.first, key.second, n);
  out += "# HELP lococo_errors_total Requests answered with status >= 400.\n# TYPE lococo_errors_total counter\n";
  uint64_t errors = 0;
  for (const auto& [key, n] : requests_) errors += key.second >= 400 ? n : 0;
  out += fmt::format("lococo_errors_total {}\n", errors);
  out += fmt::format("# TYPE lococo_prompt_tokens_total counter\nlococo_prompt_tokens_total {}\n", tokens_in_);
  out += fmt::format("# HELP lococo_prompt_tokens_read_total Prompt tokens read through the model.\n"
                     "# TYPE lococo_prompt_tokens_read_total counter\nlococo_prompt_tokens_read_total {}\n",
                     prompt_read_.load());
  out += fmt::format("# HELP lococo_prompt_tokens_reused_total Prompt tokens a kept state had read already.\n"
                     "# TYPE lococo_prompt_tokens_reused_total counter\nlococo_prompt_tokens_reused_total {}\n",
                     prompt_reused_.load());
  out += fmt::format("# TYPE lococo_generated_tokens_total counter\nlococo_generated_tokens_total {}\n", tokens_out_);
  out += "# HELP lococo_request_seconds Generation latency.\n# TYPE lococo_request_seconds histogram\n";
  for (size_t i = 0; i < kBuckets.size(); ++i)
    out += fmt::format("lococo_request_seconds_bucket{{le=\"{}\"}} {}\n", kBuckets[i], latency_buckets_[i]);
  out += fmt::format("lococo_request_seconds_bucket{{le=\"+Inf\"}} {}\n", latency_count_);
  out += fmt::format("lococo_request_seconds_sum {}\nlococo_request_seconds_count {}\n", latency_sum_, latency_count_);
  out += fmt::format("# HELP lococo_cache_bytes KV-cache bytes held by running requests.\n# TYPE lococo_cache_bytes gauge\n"
                     "lococo_cache_bytes {}\n", cache_bytes_.load());
  out += fmt::format("# TYPE lococo_slots_busy gauge\nlococo_slots_busy {}\n", busy);
  out += fmt::format("# TYPE lococo_queue_length gauge\nlococo_queue_length {}\n", waiting);
  return out;
}

}  // namespace lococo::server_detail
