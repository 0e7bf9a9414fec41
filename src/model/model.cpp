#include "lococo/model/model.h"

#include <stdexcept>

#include "lococo/ops/attention.h"
#include "lococo/ops/layer_math.h"
#include "lococo/ops/rope.h"

namespace lococo {

LlamaModel::LlamaModel(ModelConfig config, LlamaWeights weights, ModelOptions options)
    : config_(std::move(config)), weights_(std::move(weights)), options_(options) {
  config_.validate("model config");
  if (static_cast<int64_t>(weights_.layers.size()) != config_.num_layers)
    throw std::invalid_argument("LlamaModel: weights have a different number of layers than the config");
}

torch::Tensor LlamaModel::attention_block(int i, const torch::Tensor& h, CacheChunk* chunk) const {
  const LayerWeights& l = weights_.layers[i];
  const int64_t B = h.size(0), T = h.size(1), d = config_.head_dim;
  auto q = l.q.forward(h).view({B, T, config_.num_heads, d}).transpose(1, 2);     // [B, Hq, T, d]
  auto k = l.k.forward(h).view({B, T, config_.num_kv_heads, d}).transpose(1, 2);  // [B, Hkv, T, d]
  auto v = l.v.forward(h).view({B, T, config_.num_kv_heads, d}).transpose(1, 2);  // [B, Hkv, T, d]
  const RopeTable rope(config_);
  torch::Tensor out;                                                              // [B, Hq, T, d]
  if (!chunk) {
    out = attention(rope.rotate(q, 0), rope.rotate(k, 0), v);
  } else {
    CacheChunk::Layer layer = chunk->layer(i);
    const int64_t p0 = layer.position();
    auto q_rot = rope.rotate(q, p0);
    auto k_rot = rope.rotate(k, p0);
    KeysValues kv = layer.append(k[0], k_rot[0], v[0]);                           // [Hkv, S, d]
    const AttentionStatsRequest request = layer.stats_request();
    AttentionStats stats;
    // A cache may store a wider dtype than the weights (fp32 for bf16 models):
    // attention then runs in the cache's dtype.
    const auto q_in = q_rot.to(kv.keys.scalar_type());
    out = (kv.key_bias.defined()
               ? attention_plain(q_in, kv.keys.unsqueeze(0), kv.values.unsqueeze(0), request, &stats, kv.key_bias)
               : attention(q_in, kv.keys.unsqueeze(0), kv.values.unsqueeze(0), request, &stats))
              .to(q.scalar_type());
    layer.observe(stats);
  }
  return l.o.forward(out.transpose(1, 2).reshape({B, T, config_.q_dim()}));       // [B, T, D]
}

torch::Tensor LlamaModel::layer_forward(int i, const torch::Tensor& x, CacheChunk* chunk) const {
  const LayerWeights& l = weights_.layers[i];
  auto h = x + attention_block(i, rms_norm(x, l.attn_norm, config_.rms_norm_eps), chunk);
  auto m = rms_norm(h, l.mlp_norm, config_.rms_norm_eps);
  return h + l.down.forward(swiglu(l.gate.forward(m), l.up.forward(m)));         // [B, T, D]
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
  if (!cache) {
    for (int i = 0; i < config_.num_layers; ++i) x = layer_forward(i, x, nullptr);
  } else {
    CacheChunk chunk = cache->begin_chunk(T);
    for (int i = 0; i < config_.num_layers; ++i) x = layer_forward(i, x, &chunk);
    chunk.end();
  }
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
