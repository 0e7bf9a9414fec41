#include "lococo/ops/layer_math.h"

#include <cmath>

namespace lococo {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const auto ct = at::promote_types(x.scalar_type(), torch::kFloat32);  // fp32 at least; double stays double
  auto xf = x.to(ct);
  auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (normed * weight.to(ct)).to(x.scalar_type());
}

void rms_norm_into(const torch::Tensor& x, const torch::Tensor& weight, double eps, const torch::Tensor& out) {
  const int64_t n = x.numel();
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(xp[i]) * xp[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(sum / n + eps));
  with_elements(weight, [&](const auto* wp) {
    for (int64_t i = 0; i < n; ++i) op[i] = xp[i] * inv * static_cast<float>(wp[i]);
  });
}

torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up) { return torch::silu(gate) * up; }

void swiglu_rows(float* gate, const float* up, std::pair<int64_t, int64_t> rows) {
  for (int64_t r = rows.first; r < rows.second; ++r) gate[r] = gate[r] / (1.0f + std::exp(-gate[r])) * up[r];
}

}  // namespace lococo
