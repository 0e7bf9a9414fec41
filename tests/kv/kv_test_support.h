// Shared by the KV-cache and compressor tests: a tiny random model built in
// process, token streams, and a driver that feeds a cache synthetic chunks whose
// keys and values encode each token's index (so kept tokens can be identified).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "kv/slot_cache.h"
#include "lococo/kv/cache.h"
#include "lococo/model/model.h"
#include "lococo/model/weights.h"

namespace lococo::testing {

inline ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 1 << 16;
  return c;
}

// init_weights' std 0.02 makes attention nearly uniform; `qk_scale` scales the
// query and key projections so that attention is peaked and slot scores differ.
inline std::unique_ptr<LlamaModel> tiny_model(uint64_t seed = 1, double qk_scale = 1.0) {
  const ModelConfig c = tiny_config();
  LlamaWeights w = init_weights(c, seed);
  for (auto& l : w.layers) {
    l.q.weight.mul_(qk_scale);
    l.k.weight.mul_(qk_scale);
  }
  return std::make_unique<LlamaModel>(c, std::move(w));
}

inline torch::Tensor random_tokens(int64_t n, uint64_t seed, int64_t vocab = 64) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(vocab, {n}, gen, torch::kInt64);  // [n]
}

inline CacheOptions bounded_options(const std::string& policy, int64_t budget, int64_t buffer, int64_t chunk) {
  CacheOptions o;
  o.policy = policy;
  o.budget = budget;
  o.buffer = buffer;
  o.chunk = chunk;
  o.streaming.sinks = 4;
  o.snapkv.observation_window = 8;
  o.lococo.allow_untrained = true;  // lococo runs with a seeded, untrained compressor
  o.lococo.seed = 7;
  return o;
}

inline const std::vector<std::string>& bounded_policies() {
  static const std::vector<std::string> p = {"streaming", "h2o", "tova", "snapkv", "lococo-hh", "lococo"};
  return p;
}

// Runs `tokens` through the model in chunks of `chunk`, calling `after(logits)`
// after every chunk with the chunk's logits [1, n, V].
inline void stream(const LlamaModel& model, KvCache& cache, const torch::Tensor& tokens, int64_t chunk,
                   const std::function<void(const torch::Tensor&)>& after = {}) {
  torch::NoGradGuard no_grad;
  for (int64_t at = 0; at < tokens.size(0); at += chunk) {
    auto logits = model.forward(tokens.narrow(0, at, std::min(chunk, tokens.size(0) - at)), &cache);
    if (after) after(logits);
  }
}

// Attention statistics for one layer of a synthetic chunk: S slots after the append.
using StatsMaker = std::function<AttentionStats(int layer, int64_t S, int64_t n)>;

// Feeds a chunk of n tokens (indices seen .. seen + n - 1) to every layer as the
// model would, through a CacheChunk. Key and value rows are the
// token index (plus 1000 * KV head), so stored rows identify their tokens.
inline void feed_chunk(KvCache& cache, const ModelConfig& c, int64_t n, const StatsMaker& stats) {
  torch::NoGradGuard no_grad;
  const int64_t first = cache.tokens_seen();
  auto index = torch::arange(first, first + n, torch::kFloat32).view({1, n, 1});                    // [1, n, 1]
  auto head = torch::arange(c.num_kv_heads, torch::kFloat32).view({c.num_kv_heads, 1, 1}) * 1000;  // [Hkv, 1, 1]
  auto kv = (index + head).expand({c.num_kv_heads, n, c.head_dim}).contiguous();                   // [Hkv, n, d]
  CacheChunk chunk = cache.begin_chunk(n);
  for (int i = 0; i < c.num_layers; ++i) {
    CacheChunk::Layer layer = chunk.layer(i);
    KeysValues out = layer.append(kv, kv, kv);
    if (layer.stats_request().any()) layer.observe(stats(i, out.keys.size(1), n));
  }
  chunk.end();
}

// Positions as vectors, per KV head: [Hkv][len].
inline std::vector<std::vector<int64_t>> positions_of(const SlotCache& cache, int layer) {
  auto p = cache.stored_positions(layer).contiguous();
  std::vector<std::vector<int64_t>> out(p.size(0));
  for (int64_t h = 0; h < p.size(0); ++h)
    for (int64_t j = 0; j < p.size(1); ++j) out[h].push_back(p[h][j].item<int64_t>());
  return out;
}

}  // namespace lococo::testing
