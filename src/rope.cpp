#include "lococo/rope.h"

namespace lococo {

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& positions, const RopeParams& p) {
  const int64_t d = x.size(-1);
  const int64_t half = d / 2;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(x.device());
  // Angles in double so that large positions (long streams) keep their precision.
  auto inv_freq = torch::pow(p.theta, -torch::arange(0, half, f64) * 2.0 / static_cast<double>(d));  // [d/2]
  auto angles = torch::outer(positions.to(f64) / p.scale, inv_freq);                                // [T, d/2]
  auto cos = angles.cos().to(x.scalar_type());
  auto sin = angles.sin().to(x.scalar_type());
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

torch::Tensor apply_rope(const torch::Tensor& x, int64_t start, const RopeParams& p) {
  const int64_t t = x.size(-2);
  return apply_rope(x, torch::arange(start, start + t, torch::TensorOptions().dtype(torch::kInt64).device(x.device())), p);
}

}  // namespace lococo
