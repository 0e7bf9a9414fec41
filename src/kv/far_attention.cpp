#include "lococo/kv/far_attention.h"

#include <stdexcept>

#include <fmt/format.h>

#include "kv/slot_cache.h"

namespace lococo {

namespace {

// Nothing is evicted, so slot j holds token j and its position is j under
// either scheme; `cache` positions keep the keys before RoPE.
CacheOptions keys_before_rope(CacheOptions o) {
  o.positions = PositionMode::Cache;
  return o;
}

class FarAttentionCache final : public SlotCache {
 public:
  FarAttentionCache(const ModelConfig& c, const CacheOptions& o, int64_t far)
      : SlotCache(c, keys_before_rope(o), o.chunk), far_(far) {}
  std::string describe() const override { return fmt::format("far-attention(far={})", far_); }

 protected:
  void prepare(int, int64_t n_new) override { chunk_tokens_ = n_new; }

  AttentionStatsRequest stats_request(int) const override {
    AttentionStatsRequest r;
    r.window = chunk_tokens_;  // every query of the chunk
    return r;
  }

  void observe(int i, const AttentionStats& stats) override {
    torch::NoGradGuard no_grad;
    auto& l = layer(i);
    const auto& rows = stats.window;  // [Hkv, w, S]: the chunk's last w queries
    TORCH_CHECK(rows.defined() && rows.size(2) == l.len, "far-attention: window statistics [Hkv, w, S] expected");
    const int64_t w = rows.size(1), S = l.len;
    auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(rows.device());
    auto query_pos = torch::arange(tokens_seen() + chunk_tokens_ - w, tokens_seen() + chunk_tokens_, i64);  // [w]
    auto far_enough = (query_pos.unsqueeze(1) - torch::arange(S, i64).unsqueeze(0)) >= far_;                 // [w, S]
    auto best = (rows.to(torch::kFloat32) * far_enough).amax(1);                                            // [Hkv, S]
    auto scores = l.scores.narrow(1, 0, S);
    scores.copy_(torch::maximum(scores, best));
  }

 private:
  int64_t far_;
  int64_t chunk_tokens_ = 0;
};

}  // namespace

std::unique_ptr<KvCache> make_far_attention_cache(const ModelConfig& config, const CacheOptions& options,
                                                  int64_t far) {
  if (far < 1) throw std::invalid_argument(fmt::format("--far must be at least 1 (got {})", far));
  return std::make_unique<FarAttentionCache>(config, options, far);
}

}  // namespace lococo
