// streaming (StreamingLLM): the first `sinks` tokens, which soak up attention
// whatever their content, plus the most recent M - sinks tokens.
#include <stdexcept>

#include <fmt/format.h>

#include "kv/policies.h"

namespace lococo {
namespace {

class StreamingCache final : public BoundedCache {
 public:
  StreamingCache(const ModelConfig& c, const CacheOptions& o) : BoundedCache(c, o) {
    if (o.streaming.sinks < 0 || o.streaming.sinks >= o.budget)
      throw std::invalid_argument(
          fmt::format("--sinks must be in [0, --budget) (got sinks {}, budget {})", o.streaming.sinks, o.budget));
  }

  AttentionStatsRequest stats_request(int) const override { return {}; }  // ranks by position only
  void observe(int, const AttentionStats&) override {}
  std::string describe() const override {
    return fmt::format("streaming(M={},b={},sinks={})", options_.budget, options_.buffer, options_.streaming.sinks);
  }

 protected:
  void compress(int i) override {
    const int64_t L = slots(i), M = options_.budget, sinks = options_.streaming.sinks;
    auto opts = torch::TensorOptions().dtype(torch::kInt64).device(options_.device);
    // Slots stay in token order, so the first slots are the first tokens.
    auto index = torch::cat({torch::arange(sinks, opts), torch::arange(L - (M - sinks), L, opts)});  // [M]
    keep_slots(i, index);
  }
};

}  // namespace

std::unique_ptr<KvCache> make_streaming_cache(const ModelConfig& config, const CacheOptions& options) {
  return std::make_unique<StreamingCache>(config, options);
}

}  // namespace lococo
