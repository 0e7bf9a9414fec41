#include "lococo/train/retention_targets.h"

#include <stdexcept>

#include <fmt/format.h>

#include "kv/slot_cache.h"
#include "lococo/kv/far_attention.h"

namespace lococo {
namespace {

CacheOptions full_cache_options(const LlamaModel& model, int64_t chunk) {
  CacheOptions o;
  o.chunk = chunk;
  o.positions = PositionMode::Cache;  // keys stored before RoPE: what retention reads
  o.dtype = at::promote_types(model.weights().embed.scalar_type(), torch::kFloat32);
  return o;
}

// A full cache that hands the model, with its slots, a logit bias per slot:
// [layers] x [Hkv, n] for the first n slots (set_bias), 0 after.
class KeyBiasCache final : public SlotCache {
 public:
  KeyBiasCache(const LlamaModel& m, int64_t chunk) : SlotCache(m.config(), full_cache_options(m, chunk), chunk) {}
  std::string describe() const override { return "key-bias"; }
  void set_bias(std::vector<torch::Tensor> bias) { bias_ = std::move(bias); }

 protected:
  void prepare(int, int64_t) override {}
  AttentionStatsRequest stats_request(int) const override { return {}; }
  void observe(int, const AttentionStats&) override {}
  KeysValues append(int i, const torch::Tensor& k_raw, const torch::Tensor& k_rot, const torch::Tensor& v) override {
    KeysValues kv = SlotCache::append(i, k_raw, k_rot, v);
    if (bias_.empty()) return kv;
    const auto& b = bias_[i];  // [Hkv, n]
    const int64_t rest = kv.keys.size(1) - b.size(1);
    kv.key_bias = torch::cat({b, torch::zeros({b.size(0), rest}, b.options().requires_grad(false))}, 1);  // [Hkv, S]
    return kv;
  }

 private:
  std::vector<torch::Tensor> bias_;
};

void read(const LlamaModel& model, const torch::Tensor& tokens, int64_t chunk, KvCache* cache) {
  torch::NoGradGuard no_grad;
  const int64_t T = tokens.size(0);
  for (int64_t at = 0; at < T; at += chunk) model.hidden_states(tokens.narrow(0, at, std::min(chunk, T - at)), cache);
}

// The first n slots' keys and values of every layer (copies, fp32).
void take_slots(const KvCache& cache, int64_t n, RetentionRow& r) {
  r.n = n;
  for (int i = 0; i < cache.num_layers(); ++i) {
    const KeysValues kv = cache.stored(i);
    r.keys.push_back(kv.keys.narrow(1, 0, n).to(torch::kFloat32).clone());
    r.values.push_back(kv.values.narrow(1, 0, n).to(torch::kFloat32).clone());
  }
}

RetentionRow far_attention_targets(const LlamaModel& model, const torch::Tensor& row, int64_t chunk, int64_t far,
                                   int64_t horizon) {
  auto cache = make_far_attention_cache(model.config(), full_cache_options(model, chunk), far);
  read(model, row, chunk, cache.get());
  RetentionRow r;
  take_slots(*cache, row.size(0) - horizon, r);
  for (int i = 0; i < cache->num_layers(); ++i) r.targets.push_back(cache->stored_scores(i).narrow(1, 0, r.n).clone());
  return r;
}

// The bias of loss_gradient_targets' reading: [layers] x [Hkv, T - horizon].
std::vector<torch::Tensor> reading_bias(const LlamaModel& model, int64_t prefix, int64_t n, double share) {
  std::vector<torch::Tensor> bias;
  const int64_t sinks = std::min<int64_t>(kRetentionSinks, n);
  for (int i = 0; i < model.config().num_layers; ++i) {
    auto b = torch::zeros({model.config().num_kv_heads, prefix}, torch::kFloat64);
    b.narrow(1, sinks, n - sinks).fill_(std::log(share));
    bias.push_back(b);
  }
  return bias;
}

// The loss chunk reads the rest of the row with every candidate's attention
// scaled by `share` (a cache that has dropped nearly all): there the model
// misses what it lost, and the gradient says which tokens it would most gain
// from. At the full cache, or with a mild share, a confident prediction (an
// induction head copying a digit) has no gradient left.
RetentionRow loss_gradient_targets(const LlamaModel& model, const torch::Tensor& row, int64_t chunk, int64_t far,
                                   int64_t horizon, double share) {
  const int64_t prefix = row.size(0) - horizon, n = prefix - far;
  std::vector<torch::Tensor> bias = reading_bias(model, prefix, n, share);
  for (auto& b : bias) b.requires_grad_(true);
  RetentionRow r;
  {
    torch::AutoGradMode grad(true);
    far_loss(model, row, chunk, horizon, bias, &r).backward();
  }
  r.n = n;
  for (auto& k : r.keys) k = k.narrow(1, 0, n);  // views of take_slots' copies
  for (auto& v : r.values) v = v.narrow(1, 0, n);
  for (const auto& b : bias) r.targets.push_back((-b.grad().narrow(1, 0, n)).clamp_min(0).to(torch::kFloat32));
  return r;
}

}  // namespace

torch::Tensor far_loss(const LlamaModel& model, const torch::Tensor& row, int64_t chunk, int64_t horizon,
                       const std::vector<torch::Tensor>& bias, RetentionRow* slots) {
  const int64_t T = row.size(0), prefix = T - horizon;
  TORCH_CHECK(horizon >= 2 && prefix >= 1, "far_loss: the row must be longer than horizon >= 2");
  TORCH_CHECK(static_cast<int64_t>(bias.size()) == model.config().num_layers, "far_loss: one bias per layer");
  KeyBiasCache cache(model, std::max(chunk, horizon));
  read(model, row.narrow(0, 0, prefix), chunk, &cache);
  if (slots) take_slots(cache, prefix, *slots);
  const auto type = cache.kv_dtype();
  std::vector<torch::Tensor> as_stored;
  for (const auto& b : bias) as_stored.push_back(b.to(type));
  cache.set_bias(as_stored);
  auto logits = model.logits(model.hidden_states(row.narrow(0, prefix, horizon), &cache))[0];  // [horizon, V]
  return torch::nn::functional::cross_entropy(logits.narrow(0, 0, horizon - 1), row.narrow(0, prefix + 1, horizon - 1));
}

RetentionTarget parse_retention_target(const std::string& s) {
  if (s == "far-attention") return RetentionTarget::FarAttention;
  if (s == "loss-gradient") return RetentionTarget::LossGradient;
  throw std::invalid_argument(fmt::format("--target must be far-attention or loss-gradient (got '{}')", s));
}

std::string to_string(RetentionTarget t) {
  return t == RetentionTarget::FarAttention ? "far-attention" : "loss-gradient";
}

RetentionRow retention_targets(const LlamaModel& model, const torch::Tensor& row, int64_t chunk,
                               RetentionTarget target, int64_t far, int64_t horizon, double share) {
  const int64_t T = row.size(0);
  const int64_t n = target == RetentionTarget::FarAttention ? T - horizon : T - horizon - far;
  if (!(share > 0 && share <= 1))
    throw std::invalid_argument(fmt::format("--attention-share must be in (0, 1] (got {})", share));
  if (horizon < 2 || far < 1 || chunk < 1 || n < 1)
    throw std::invalid_argument(fmt::format("retention targets: a row of {} tokens with horizon {} and far {} leaves "
                                            "no token to train on", T, horizon, far));
  return target == RetentionTarget::FarAttention ? far_attention_targets(model, row, chunk, far, horizon)
                                                 : loss_gradient_targets(model, row, chunk, far, horizon, share);
}

}  // namespace lococo
