#include "lococo/ops/attention.h"

#include <atomic>
#include <cmath>

#include "ops/attention_fast.h"

namespace lococo {
namespace {

std::atomic<AttentionKernel> g_default_kernel{AttentionKernel::Auto};

void check_shapes(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                  const AttentionStatsRequest& request) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention: q, k, v must be 4-D [B, H, T, d]");
  TORCH_CHECK(k.sizes() == v.sizes(), "attention: k and v shapes differ");
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(3) == k.size(3), "attention: batch or head_dim mismatch");
  TORCH_CHECK(q.size(1) % k.size(1) == 0, "attention: query heads must be a multiple of KV heads");
  TORCH_CHECK(k.size(2) >= q.size(2), "attention: fewer keys than queries");
  TORCH_CHECK(!request.any() || q.size(0) == 1, "attention: statistics need batch size 1");
}

}  // namespace

void set_default_attention_kernel(AttentionKernel kernel) { g_default_kernel = kernel; }
AttentionKernel default_attention_kernel() { return g_default_kernel; }

torch::Tensor attention_plain(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const AttentionStatsRequest& request, AttentionStats* stats,
                              const torch::Tensor& key_bias) {
  check_shapes(q, k, v, request);
  const int64_t B = q.size(0), Hq = q.size(1), T = q.size(2), d = q.size(3);
  const int64_t Hkv = k.size(1), S = k.size(2), G = Hq / Hkv;
  // Group the query heads of one KV head into the row dimension: [B, Hkv, G*T, d].
  auto qg = q.reshape({B, Hkv, G * T, d});
  const auto ct = at::promote_types(q.scalar_type(), torch::kFloat32);  // fp32 at least; double stays double
  auto scores = torch::matmul(qg.to(ct), k.to(ct).transpose(-1, -2)) /
                std::sqrt(static_cast<double>(d));                              // [B, Hkv, G*T, S]
  if (key_bias.defined()) {
    TORCH_CHECK(key_bias.dim() == 2 && key_bias.size(0) == Hkv && key_bias.size(1) == S,
                "attention: key_bias must be [Hkv, S]");
    scores = scores + key_bias.to(ct).view({1, Hkv, 1, S});
  }
  // Query t of the chunk sees keys j <= S - T + t.
  auto opts = torch::TensorOptions().device(q.device()).dtype(torch::kInt64);
  auto t_idx = torch::arange(T, opts).view({T, 1});
  auto j_idx = torch::arange(S, opts).view({1, S});
  auto masked = (j_idx > t_idx + (S - T));                                     // [T, S]
  scores = scores.view({B, Hkv, G, T, S}).masked_fill(masked, -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores, -1);                                     // [B, Hkv, G, T, S]
  if (stats && request.any()) {
    auto p = probs[0];                                                         // [Hkv, G, T, S]
    if (request.column_sums) stats->column_sums = p.sum({1, 2}).to(torch::kFloat32);
    if (request.last_query) stats->last_query = p.select(2, T - 1).sum(1).to(torch::kFloat32);
    if (request.window > 0) {
      const int64_t w = std::min(request.window, T);
      stats->window = p.narrow(2, T - w, w).sum(1).to(torch::kFloat32);        // [Hkv, w, S]
    }
  }
  auto out = torch::matmul(probs.view({B, Hkv, G * T, S}), v.to(ct));  // [B, Hkv, G*T, d]
  return out.view({B, Hq, T, d}).to(q.scalar_type());
}

// The one place that chooses the implementation: the fused kernel
// (src/ops/attention_fast.cpp) wherever it applies -- CPU float tensors -- and the
// plain one elsewhere (e.g. CUDA) or when asked for explicitly.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const AttentionStatsRequest& request, AttentionStats* stats, AttentionKernel kernel) {
  if (kernel == AttentionKernel::Auto) kernel = default_attention_kernel();
  if (kernel == AttentionKernel::Auto && attention_fast_supported(q, k, v)) {
    check_shapes(q, k, v, request);
    return attention_fast(q, k, v, request, stats);
  }
  return attention_plain(q, k, v, request, stats);
}

AttentionStats single_query_stats(const AttentionStatsRequest& request, const torch::Tensor& head_sums) {
  AttentionStats stats;
  if (request.column_sums) stats.column_sums = head_sums;
  if (request.last_query) stats.last_query = head_sums;
  if (request.window > 0) stats.window = head_sums.unsqueeze(1);
  return stats;
}

}  // namespace lococo
