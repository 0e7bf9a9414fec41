// tova (Token Omission Via Attention): rank slots by the attention the newest
// query pays them, averaged over the heads of the layer, and keep the M best.
// One ranking per layer, as TOVA does, so every KV head keeps the same tokens.
#include <fmt/format.h>

#include "kv/policies.h"

namespace lococo {
namespace {

class TovaCache final : public BoundedCache {
 public:
  using BoundedCache::BoundedCache;

  AttentionStatsRequest stats_request(int) const override {
    AttentionStatsRequest r;
    r.last_query = true;
    return r;
  }

  void observe(int i, const AttentionStats& stats) override {
    torch::NoGradGuard no_grad;
    auto& l = layer(i);
    TORCH_CHECK(stats.last_query.defined() && stats.last_query.size(1) == l.len, "tova: last query [Hkv, S] expected");
    l.scores.narrow(1, 0, l.len).copy_(stats.last_query);  // the newest query's view replaces the old one
  }

  std::string describe() const override { return fmt::format("tova(M={},b={})", options_.budget, options_.buffer); }

 protected:
  void compress(int i) override {
    const int64_t L = slots(i), M = options_.budget;
    // The sum ranks like the mean over heads (the last query's row is summed over
    // the query heads of each KV head, then here over the KV heads).
    auto layer_scores = layer(i).scores.narrow(1, 0, L).sum(0, /*keepdim=*/true);  // [1, L]
    keep_slots(i, top_k_then_recent(layer_scores, M, 0)[0]);                      // [M] shared by all heads
  }
};

}  // namespace

std::unique_ptr<KvCache> make_tova_cache(const ModelConfig& config, const CacheOptions& options) {
  return std::make_unique<TovaCache>(config, options);
}

}  // namespace lococo
