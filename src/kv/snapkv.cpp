// snapkv: the last w queries (the observation window) vote for the slots they
// attend to; votes are max-pooled over neighbouring slots so that a kept token
// brings its context; keep the best M - w slots per head plus the window itself.
// Applied at every compression, not only after the prompt. The window is the
// last w queries whatever the chunking: a chunk of T >= w tokens fills it, and
// shorter chunks (decoding: one token) push their rows into it, so one token at
// a time ranks slots as a chunk of the same tokens does.
#include <algorithm>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "kv/policies.h"

namespace lococo {
namespace {

void check_snapkv_options(const CacheOptions& o) {
  if (o.snapkv.observation_window < 1 || o.snapkv.observation_window >= o.budget)
    throw std::invalid_argument(fmt::format("--obs-window must be in [1, --budget) (got {}, budget {})",
                                            o.snapkv.observation_window, o.budget));
  if (o.snapkv.pool_kernel < 1 || o.snapkv.pool_kernel % 2 == 0)
    throw std::invalid_argument(fmt::format("--pool-kernel must be a positive odd number (got {})", o.snapkv.pool_kernel));
}

class SnapKvCache final : public BoundedCache {
 public:
  SnapKvCache(const ModelConfig& c, const CacheOptions& o) : BoundedCache(c, o), windows_(c.num_layers) {
    check_snapkv_options(o);
  }

  AttentionStatsRequest stats_request(int) const override {
    AttentionStatsRequest r;
    r.window = options_.snapkv.observation_window;
    return r;
  }

  void observe(int i, const AttentionStats& stats) override {
    torch::NoGradGuard no_grad;
    auto& l = layer(i);
    TORCH_CHECK(stats.window.defined() && stats.window.size(2) == l.len, "snapkv: window [Hkv, w, S] expected");
    auto& rows = window(i);                                   // [Hkv, w, cap]
    const int64_t w = rows.size(1), n = std::min(stats.window.size(1), w), S = l.len;
    // Oldest rows out, the newest n in; a row is 0 at slots its query could not see.
    if (n < w) rows.narrow(1, 0, w - n).copy_(rows.narrow(1, n, w - n).clone());
    auto fresh = rows.narrow(1, w - n, n);
    fresh.zero_();
    fresh.narrow(2, 0, S).copy_(stats.window.narrow(1, stats.window.size(1) - n, n));
    l.scores.narrow(1, 0, S).copy_(rows.narrow(2, 0, S).sum(1));  // votes of the window's queries
  }

  std::string describe() const override {
    return fmt::format("snapkv(M={},b={},window={},pool={})", options_.budget, options_.buffer,
                       options_.snapkv.observation_window, options_.snapkv.pool_kernel);
  }

 protected:
  void compress(int i) override {
    const int64_t L = slots(i), M = options_.budget, w = options_.snapkv.observation_window,
                  k = options_.snapkv.pool_kernel;
    auto votes = layer(i).scores.narrow(1, 0, L - w);                                      // [Hkv, L - w]
    auto pooled = torch::max_pool1d(votes.unsqueeze(1), {k}, /*stride=*/{1}, /*padding=*/{k / 2}).squeeze(1);
    const auto kept = top_k_then_recent(pooled, M - w, w);                                 // [Hkv, M]
    auto& rows = window(i);                                                                // [Hkv, w, cap]
    auto moved = rows.gather(2, kept.unsqueeze(1).expand({rows.size(0), w, M}));           // [Hkv, w, M]
    rows.zero_();
    rows.narrow(2, 0, M).copy_(moved);
    keep_slots(i, kept);
  }

  void clear() override {
    BoundedCache::clear();
    for (auto& rows : windows_) rows = torch::Tensor();
  }

  // The window's rows over the stored slots: [Hkv, w, len] per layer.
  void add_policy_state(CacheSnapshot& s) const override {
    const int64_t w = options_.snapkv.observation_window;
    for (int i = 0; i < num_layers(); ++i) {
      const int64_t len = slots(i);
      const auto& rows = windows_[i];
      s.tensors.emplace_back(fmt::format("layers.{}.window", i),
                             rows.defined() ? rows.narrow(2, 0, len).to(torch::kCPU).contiguous().clone()
                                            : torch::zeros({config_.num_kv_heads, w, len}));
    }
  }

  void restore_policy_state(SnapshotReader& r) override {
    const int64_t w = options_.snapkv.observation_window;
    for (int i = 0; i < num_layers(); ++i) {
      const int64_t len = slots(i);
      auto& rows = window(i);
      rows.zero_();
      rows.narrow(2, 0, len).copy_(
          r.take(fmt::format("layers.{}.window", i), {config_.num_kv_heads, w, len}, torch::kFloat32, options_.device));
    }
  }

 private:
  // The last w queries' probabilities over the slots, oldest first: [Hkv, w, cap].
  torch::Tensor& window(int i) {
    auto& rows = windows_[i];
    if (rows.defined() && rows.size(2) >= capacity(i)) return rows;
    auto bigger = torch::zeros({config_.num_kv_heads, options_.snapkv.observation_window, capacity(i)},
                               torch::TensorOptions().dtype(torch::kFloat32).device(options_.device));
    if (rows.defined()) bigger.narrow(2, 0, rows.size(2)).copy_(rows);
    rows = bigger;
    return rows;
  }

  std::vector<torch::Tensor> windows_;  // per layer
};

}  // namespace

std::unique_ptr<KvCache> make_snapkv_cache(const ModelConfig& config, const CacheOptions& options) {
  return std::make_unique<SnapKvCache>(config, options);
}

}  // namespace lococo
