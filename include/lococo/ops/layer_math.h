// The math of a Llama block besides attention and RoPE: RMSNorm and the SwiGLU
// gate, each in its tensor form (forward(), training) and its pointer form
// (decode_step(), one token, fp32 buffers), side by side so that they stay one
// definition:
//   rms_norm(x) = x / sqrt(mean(x^2) + eps) * weight     (in fp32 at least)
//   swiglu(gate, up) = silu(gate) * up = gate / (1 + exp(-gate)) * up
#pragma once

#include <cstdint>
#include <utility>

#include <torch/torch.h>

namespace lococo {

// x [..., D], weight [D]. Computes in fp32 (double stays double), returns x's dtype.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
// x, out: fp32 [D] (contiguous); weight fp32 or bf16 [D]. The sum of squares in double.
void rms_norm_into(const torch::Tensor& x, const torch::Tensor& weight, double eps, const torch::Tensor& out);

// gate, up [..., F]. Returns silu(gate) * up.
torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up);
// gate[r] = silu(gate[r]) * up[r] for r in [rows.first, rows.second).
void swiglu_rows(float* gate, const float* up, std::pair<int64_t, int64_t> rows);

// Calls f with a typed pointer to t's elements: float, or at::BFloat16 (which
// reads as float) for bf16 models' norm weights and biases.
template <class F>
void with_elements(const torch::Tensor& t, F&& f) {
  if (t.scalar_type() == torch::kBFloat16) return f(t.data_ptr<at::BFloat16>());
  f(t.data_ptr<float>());
}

}  // namespace lococo
