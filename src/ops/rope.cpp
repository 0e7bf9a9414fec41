#include "lococo/ops/rope.h"

#include <algorithm>
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

RopeTable::RopeTable(const RopeParams& params, int64_t head_dim) : inv_freq_(params.inv_freq(head_dim)) {}

std::pair<torch::Tensor, torch::Tensor> RopeTable::angles(const torch::Tensor& positions,
                                                          torch::ScalarType dtype) const {
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(positions.device());
  auto inv_freq = torch::tensor(inv_freq_, f64);                // [d/2]
  auto angles = torch::outer(positions.to(f64), inv_freq);      // [T, d/2]
  return {angles.cos().to(dtype), angles.sin().to(dtype)};
}

void RopeTable::angles_at(double position, float* cos, float* sin) const {
  for (size_t j = 0; j < inv_freq_.size(); ++j) {
    cos[j] = static_cast<float>(std::cos(position * inv_freq_[j]));
    sin[j] = static_cast<float>(std::sin(position * inv_freq_[j]));
  }
}

torch::Tensor RopeTable::rotate(const torch::Tensor& x, const torch::Tensor& positions) const {
  const auto [cos, sin] = angles(positions, x.scalar_type());  // [T, d/2]
  const int64_t h = half();
  auto x1 = x.narrow(-1, 0, h), x2 = x.narrow(-1, h, h);
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

torch::Tensor RopeTable::rotate(const torch::Tensor& x, int64_t start) const {
  const int64_t t = x.size(-2);
  return rotate(x, torch::arange(start, start + t, torch::TensorOptions().dtype(torch::kInt64).device(x.device())));
}

void RopeTable::rotate_into(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                            torch::Tensor& out, torch::Tensor& tmp) {
  // The arithmetic of rotate(), op for op (the same rounding), without allocating.
  const int64_t h = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, h), x2 = x.narrow(-1, h, h);
  auto out1 = out.narrow(-1, 0, h), out2 = out.narrow(-1, h, h);
  at::mul_out(out1, x1, cos);
  at::mul_out(tmp, x2, sin);
  out1.sub_(tmp);
  at::mul_out(out2, x2, cos);
  at::mul_out(tmp, x1, sin);
  out2.add_(tmp);
}

void RopeTable::rotate_in_place(float* x, int64_t heads, int64_t d, const float* cos, const float* sin) {
  const int64_t half = d / 2;
  for (int64_t h = 0; h < heads; ++h, x += d)
    for (int64_t j = 0; j < half; ++j) {
      const float a = x[j], b = x[j + half];
      x[j] = a * cos[j] - b * sin[j];
      x[j + half] = b * cos[j] + a * sin[j];
    }
}

void RopeTable::ensure_slots(int64_t rows) {
  if (slot_cos_.defined() && slot_cos_.size(0) >= rows) return;
  const int64_t cap = std::max<int64_t>(rows, slot_cos_.defined() ? 2 * slot_cos_.size(0) : 0);
  slot_cos_ = torch::empty({cap, half()});
  slot_sin_ = torch::empty({cap, half()});
  for (int64_t p = 0; p < cap; ++p)
    angles_at(static_cast<double>(p), slot_cos_.data_ptr<float>() + p * half(), slot_sin_.data_ptr<float>() + p * half());
}

const torch::Tensor& RopeTable::slot_cos(int64_t rows) {
  ensure_slots(rows);
  return slot_cos_;
}

const torch::Tensor& RopeTable::slot_sin(int64_t rows) {
  ensure_slots(rows);
  return slot_sin_;
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& positions, const RopeParams& p) {
  return RopeTable(p, x.size(-1)).rotate(x, positions);
}

torch::Tensor apply_rope(const torch::Tensor& x, int64_t start, const RopeParams& p) {
  return RopeTable(p, x.size(-1)).rotate(x, start);
}

}  // namespace lococo
