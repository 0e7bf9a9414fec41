// Chunk-over-cache attention: the queries of a chunk of T tokens attend to S
// keys/values, of which the last T are the chunk itself (causal inside the
// chunk) and the first S - T are cache slots (all visible).
//
// Grouped-query: query head h reads KV head h / G (G = Hq / Hkv), the Hugging
// Face `repeat_kv` order; repeated KV heads are never materialised.
//
// Optionally, in the same pass, the statistics the KV-cache policies rank slots by:
//   column_sums [Hkv, S]     sum over the chunk's queries and the G query heads
//                            of each KV head of the attention probabilities
//   last_query  [Hkv, S]     the last query's probabilities, summed over the G heads
//   window      [Hkv, w, S]  the last w queries' probabilities, summed over the G heads
// (fewer than w rows when T < w).
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace lococo {

struct AttentionStatsRequest {
  bool column_sums = false;  // per-slot sums over the chunk's queries
  bool last_query = false;   // the last query's row
  int64_t window = 0;        // rows of the last `window` queries; 0 = none
  bool any() const { return column_sums || last_query || window > 0; }
};

struct AttentionStats {
  torch::Tensor column_sums;  // [Hkv, S] fp32, or undefined
  torch::Tensor last_query;   // [Hkv, S] fp32, or undefined
  torch::Tensor window;       // [Hkv, w', S] fp32, or undefined
};

// The statistics of a single query (decoding one token): its probabilities
// summed over the G query heads of each KV head, head_sums [Hkv, S], are the
// column sums, the last query's row and a one-row window ([Hkv, 1, S]) alike.
AttentionStats single_query_stats(const AttentionStatsRequest& request, const torch::Tensor& head_sums);

enum class AttentionKernel {
  Auto,   // the fast fused kernel where it applies, else plain
  Plain,  // explicit softmax(QK^T / sqrt(d) + mask) V on libtorch ops
};

// q [B, Hq, T, d]; k, v [B, Hkv, S, d] with S >= T. Returns [B, Hq, T, d].
// Statistics are only supported for B == 1. Softmax in fp32.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const AttentionStatsRequest& request = {}, AttentionStats* stats = nullptr,
                        AttentionKernel kernel = AttentionKernel::Auto);

// The reference implementation (also the fallback): materialises the
// [B, Hkv, G*T, S] probabilities. key_bias [Hkv, S], if defined, is added to
// every logit of its key (a soft mask: log of the share of attention a key
// keeps; differentiable).
torch::Tensor attention_plain(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const AttentionStatsRequest& request, AttentionStats* stats,
                              const torch::Tensor& key_bias = {});

// Process-wide default kernel for `Auto` (benchmarks flip it to compare).
void set_default_attention_kernel(AttentionKernel kernel);
AttentionKernel default_attention_kernel();

}  // namespace lococo
