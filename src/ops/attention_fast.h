// The fused, memory-efficient CPU attention kernel behind `attention()`
// (include/lococo/ops/attention.h has the operator's contract; `attention()` is the
// one place that decides whether this kernel or the plain one runs).
//
// Flash-attention style on the CPU (src/ops/attention_kernels.inc has the details):
// - forward: one task per (batch, KV head, block of queries); the G query heads
//   of the KV head are processed together as the lanes of one tile (no repeated
//   KV), keys in blocks of 64 with an online softmax. Scores are computed
//   transposed (keys x query lanes), so K and V are read in place and the
//   softmax max/sum are lane-wise vector ops. Keeps only the output and each
//   query row's log-sum-exp (lse).
// - statistics (column sums, last-query row, window rows), when requested, in
//   the same pass: column sums need each row's final normaliser, known only
//   once the row has seen every key, so a tile keeps its blocks of unnormalised
//   probabilities p~ = exp(s - m_b) and each block's running max m_b (scratch
//   O(S x tile lanes) per worker, never [T, S]); once its lse is known it
//   turns them into p = p~ * exp(m_b - lse) and sums them per key: a fraction
//   of the forward's cost, instead of a second Q K^T.
// - backward: a custom autograd function saving q, k, v, out and lse only, and
//   recomputing probabilities block by block (flash-attention-2: delta =
//   rowsum(dO * O), dS = P * (dP - delta)); one task per key block owns its dK,
//   dV rows, dQ goes to per-worker accumulators summed in a fixed order, so the
//   result is deterministic for a given thread count. Peak extra memory
//   O(T*d) (times the worker count for dQ). Not twice differentiable.
// Inner loops are vectorised for AVX-512, AVX2/FMA or portable vectors, chosen
// at run time (include/lococo/core/cpu_features.h; tiles of at most 8 lanes, e.g.
// decoding, use AVX2); work runs on at::parallel_for.
#pragma once

#include <torch/torch.h>

#include "lococo/ops/attention.h"

namespace lococo {

// True when the fused kernel can run these tensors: CPU, strided, one dtype of
// float32 / float64 (native) or bfloat16 / float16 (computed in float32), and
// no empty dimension.
bool attention_fast_supported(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// Same contract as `attention()` (shapes, masking, statistics), always the
// fused kernel; requires attention_fast_supported(q, k, v).
torch::Tensor attention_fast(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const AttentionStatsRequest& request = {}, AttentionStats* stats = nullptr);

// The forward kernel alone, without autograd: {out [B, Hq, T, d], lse [B, Hq, T]}
// where lse is each query row's log-sum-exp of its scaled, masked scores.
std::pair<torch::Tensor, torch::Tensor> attention_fast_forward(const torch::Tensor& q, const torch::Tensor& k,
                                                               const torch::Tensor& v);

}  // namespace lococo
