#include "lococo/rope.h"

#include <cmath>

namespace lococo {

std::vector<double> RopeParams::inv_freq(int64_t head_dim) const {
  std::vector<double> out;
  const RopeScaling& s = scaling;
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    double f = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    if (s.type == "linear") {
      f /= s.factor;
    } else if (s.type == "llama3") {
      const double wavelength = 2.0 * M_PI / f;
      const double context = static_cast<double>(s.original_max_position);
      if (wavelength > context / s.low_freq_factor) {
        f /= s.factor;  // long wavelengths: interpolated
      } else if (wavelength >= context / s.high_freq_factor) {
        // In between: a linear blend of interpolated and unchanged by context / wavelength.
        const double smooth = (context / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.0 - smooth) * f / s.factor + smooth * f;
      }
    }
    if (!s.frequency_divisors.empty()) f /= s.frequency_divisors.at(static_cast<size_t>(i));
    out.push_back(f);
  }
  return out;
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& positions, const RopeParams& p) {
  const int64_t d = x.size(-1);
  const int64_t half = d / 2;
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(x.device());
  // Angles in double so that large positions (long streams) keep their precision.
  auto inv_freq = torch::tensor(p.inv_freq(d), f64);              // [d/2]
  auto angles = torch::outer(positions.to(f64), inv_freq);        // [T, d/2]
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
