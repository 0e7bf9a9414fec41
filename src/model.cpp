#include "lococo/model.h"

#include <stdexcept>

#include "lococo/attention.h"
#include "lococo/rope.h"

namespace lococo {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const auto ct = at::promote_types(x.scalar_type(), torch::kFloat32);  // fp32 at least; double stays double
  auto xf = x.to(ct);
  auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (normed * weight.to(ct)).to(x.scalar_type());
}

LlamaModel::LlamaModel(ModelConfig config, LlamaWeights weights, ModelOptions options)
    : config_(std::move(config)), weights_(std::move(weights)), options_(options) {
  config_.validate("model config");
  if (static_cast<int64_t>(weights_.layers.size()) != config_.num_layers)
    throw std::invalid_argument("LlamaModel: weights have a different number of layers than the config");
}

torch::Tensor LlamaModel::attention_block(int i, const torch::Tensor& h, KvCache* cache) const {
  const LayerWeights& l = weights_.layers[i];
  const int64_t B = h.size(0), T = h.size(1), d = config_.head_dim;
  auto q = l.q.forward(h).view({B, T, config_.num_heads, d}).transpose(1, 2);     // [B, Hq, T, d]
  auto k = l.k.forward(h).view({B, T, config_.num_kv_heads, d}).transpose(1, 2);  // [B, Hkv, T, d]
  auto v = l.v.forward(h).view({B, T, config_.num_kv_heads, d}).transpose(1, 2);  // [B, Hkv, T, d]
  const RopeParams rope = RopeParams::from(config_);
  torch::Tensor out;                                                              // [B, Hq, T, d]
  if (!cache) {
    out = attention(apply_rope(q, 0, rope), apply_rope(k, 0, rope), v);
  } else {
    cache->prepare(i, T);
    const int64_t p0 = cache->chunk_position(i);
    auto q_rot = apply_rope(q, p0, rope);
    auto k_rot = apply_rope(k, p0, rope);
    KeysValues kv = cache->append(i, k[0], k_rot[0], v[0]);                       // [Hkv, S, d]
    const AttentionStatsRequest request = cache->stats_request(i);
    AttentionStats stats;
    // A cache may store a wider dtype than the weights (fp32 for bf16 models):
    // attention then runs in the cache's dtype.
    out = attention(q_rot.to(kv.keys.scalar_type()), kv.keys.unsqueeze(0), kv.values.unsqueeze(0), request, &stats)
              .to(q.scalar_type());
    if (request.any()) cache->observe(i, stats);
  }
  return l.o.forward(out.transpose(1, 2).reshape({B, T, config_.q_dim()}));       // [B, T, D]
}

torch::Tensor LlamaModel::layer_forward(int i, const torch::Tensor& x, KvCache* cache) const {
  const LayerWeights& l = weights_.layers[i];
  auto h = x + attention_block(i, rms_norm(x, l.attn_norm, config_.rms_norm_eps), cache);
  auto m = rms_norm(h, l.mlp_norm, config_.rms_norm_eps);
  return h + l.down.forward(torch::silu(l.gate.forward(m)) * l.up.forward(m));    // [B, T, D]
}

torch::Tensor LlamaModel::hidden_states(const torch::Tensor& tokens_in, KvCache* cache) const {
  auto tokens = tokens_in.dim() == 1 ? tokens_in.unsqueeze(0) : tokens_in;        // [B, T]
  TORCH_CHECK(tokens.dim() == 2, "forward: tokens must be [T] or [B, T]");
  TORCH_CHECK(!cache || tokens.size(0) == 1, "forward: a KV cache holds one sequence (batch size 1)");
  const int64_t T = tokens.size(1);
  if (T == 0) throw std::invalid_argument("forward: empty chunk");
  {
    auto lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size)
      throw std::invalid_argument("forward: token id outside the vocabulary [0, " +
                                  std::to_string(config_.vocab_size) + ")");
  }
  auto x = torch::embedding(weights_.embed, tokens.to(weights_.embed.device()));  // [B, T, D]
  for (int i = 0; i < config_.num_layers; ++i) x = layer_forward(i, x, cache);
  if (cache) cache->end_chunk(T);
  return rms_norm(x, weights_.final_norm, config_.rms_norm_eps);
}

torch::Tensor LlamaModel::logits(const torch::Tensor& hidden) const {
  return project(hidden, weights_.lm_head).to(at::promote_types(hidden.scalar_type(), torch::kFloat32));
}

torch::Tensor LlamaModel::forward(const torch::Tensor& tokens, KvCache* cache, LogitsFor which) const {
  auto h = hidden_states(tokens, cache);                                          // [B, T, D]
  if (which == LogitsFor::Last) h = h.narrow(1, h.size(1) - 1, 1);
  return logits(h);
}

}  // namespace lococo
