// h2o (Heavy-Hitter Oracle): each slot's score is its attention accumulated over
// every query that ever saw it; keep the `recent` newest slots plus the M - recent
// best-scored of the others.
#include <stdexcept>

#include <fmt/format.h>

#include "kv/policies.h"

namespace lococo {
namespace {

int64_t recent_window(const CacheOptions& o) {
  const int64_t recent = o.h2o.recent < 0 ? o.budget / 2 : o.h2o.recent;
  if (o.h2o.recent < -1 || recent > o.budget)
    throw std::invalid_argument(
        fmt::format("--recent must be -1 (M/2) or in [0, --budget] (got recent {}, budget {})", o.h2o.recent, o.budget));
  return recent;
}

class H2oCache final : public BoundedCache {
 public:
  H2oCache(const ModelConfig& c, const CacheOptions& o) : BoundedCache(c, o), recent_(recent_window(o)) {}

  AttentionStatsRequest stats_request(int) const override {
    AttentionStatsRequest r;
    r.column_sums = true;
    return r;
  }

  void observe(int i, const AttentionStats& stats) override {
    torch::NoGradGuard no_grad;
    auto& l = layer(i);
    TORCH_CHECK(stats.column_sums.defined() && stats.column_sums.size(1) == l.len, "h2o: column sums [Hkv, S] expected");
    l.scores.narrow(1, 0, l.len).add_(stats.column_sums);  // accumulate; new slots start at 0
  }

  std::string describe() const override {
    return fmt::format("h2o(M={},b={},recent={})", options_.budget, options_.buffer, recent_);
  }

 protected:
  void compress(int i) override {
    const int64_t L = slots(i), M = options_.budget;
    auto head = layer(i).scores.narrow(1, 0, L - recent_);   // [Hkv, L - recent]
    keep_slots(i, top_k_then_recent(head, M - recent_, recent_));
  }

 private:
  const int64_t recent_;
};

}  // namespace

std::unique_ptr<KvCache> make_h2o_cache(const ModelConfig& config, const CacheOptions& options) {
  return std::make_unique<H2oCache>(config, options);
}

}  // namespace lococo
