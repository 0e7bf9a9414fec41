// snapkv: the last w queries (the observation window) vote for the slots they
// attend to; votes are max-pooled over neighbouring slots so that a kept token
// brings its context; keep the best M - w slots per head plus the window itself.
// Applied at every compression, not only after the prompt.
#include <stdexcept>

#include <fmt/format.h>

#include "kv_policies.h"

namespace lococo {
namespace {

void check_snapkv_options(const CacheOptions& o) {
  if (o.observation_window < 1 || o.observation_window >= o.budget)
    throw std::invalid_argument(fmt::format("--obs-window must be in [1, --budget) (got {}, budget {})",
                                            o.observation_window, o.budget));
  if (o.pool_kernel < 1 || o.pool_kernel % 2 == 0)
    throw std::invalid_argument(fmt::format("--pool-kernel must be a positive odd number (got {})", o.pool_kernel));
}

class SnapKvCache final : public BoundedCache {
 public:
  SnapKvCache(const ModelConfig& c, const CacheOptions& o) : BoundedCache(c, o) { check_snapkv_options(o); }

  AttentionStatsRequest stats_request(int) const override {
    AttentionStatsRequest r;
    r.window = options_.observation_window;
    return r;
  }

  void observe(int i, const AttentionStats& stats) override {
    torch::NoGradGuard no_grad;
    auto& l = layer(i);
    TORCH_CHECK(stats.window.defined() && stats.window.size(2) == l.len, "snapkv: window [Hkv, w, S] expected");
    l.scores.narrow(1, 0, l.len).copy_(stats.window.sum(1));  // votes of the newest window only
  }

  std::string describe() const override {
    return fmt::format("snapkv(M={},b={},window={},pool={})", options_.budget, options_.buffer,
                       options_.observation_window, options_.pool_kernel);
  }

 protected:
  void compress(int i) override {
    const int64_t L = slots(i), M = options_.budget, w = options_.observation_window, k = options_.pool_kernel;
    auto votes = layer(i).scores.narrow(1, 0, L - w);                                      // [Hkv, L - w]
    auto pooled = torch::max_pool1d(votes.unsqueeze(1), {k}, /*stride=*/{1}, /*padding=*/{k / 2}).squeeze(1);
    keep_slots(i, top_k_then_recent(pooled, M - w, w));                                    // [Hkv, M]
  }
};

}  // namespace

std::unique_ptr<KvCache> make_snapkv_cache(const ModelConfig& config, const CacheOptions& options) {
  return std::make_unique<SnapKvCache>(config, options);
}

}  // namespace lococo
