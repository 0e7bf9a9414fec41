// Rotary position embedding (RoPE), Hugging Face Llama convention: the head
// dimension is split into halves [x1, x2] and rotated as
//   out = [x1 cos - x2 sin, x2 cos + x1 sin],  angle(p, i) = p * inv_freq[i],
//   inv_freq[i] = theta^(-2i/d), adjusted by the config's rope_scaling.
// Angles are computed in double (large positions of long streams keep their
// precision) and rounded once to the dtype rotated. RopeTable is the one place
// that computes them, for forward(), decode_step() and the cache's slots.
#pragma once

#include <vector>

#include <torch/torch.h>

#include "lococo/core/config.h"

namespace lococo {

struct RopeParams {
  double theta = 10000.0;
  RopeScaling scaling;  // type "none": plain RoPE
  static RopeParams from(const ModelConfig& c) { return {c.rope_theta, c.rope_scaling}; }

  // The angle per position of each rotated pair: [d / 2] values, scaling applied.
  std::vector<double> inv_freq(int64_t head_dim) const;
};

class RopeTable {
 public:
  RopeTable(const RopeParams& params, int64_t head_dim);
  explicit RopeTable(const ModelConfig& c) : RopeTable(RopeParams::from(c), c.head_dim) {}

  int64_t half() const { return static_cast<int64_t>(inv_freq_.size()); }  // d / 2

  // cos and sin of `positions` ([T], any integer or float dtype) as [T, d/2] in `dtype`.
  std::pair<torch::Tensor, torch::Tensor> angles(const torch::Tensor& positions, torch::ScalarType dtype) const;
  // cos, sin ([d/2] each) of one position, fp32.
  void angles_at(double position, float* cos, float* sin) const;

  // x [..., T, d] rotated at positions start, start + 1, ... (or `positions` [T]). A new tensor.
  torch::Tensor rotate(const torch::Tensor& x, int64_t start) const;
  torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& positions) const;
  // x [..., T, d] rotated with cos, sin [T, d/2] (broadcast over the leading
  // dims), written into `out` (same shape as x; may not alias it). `tmp` is
  // scratch of x's shape with d/2 columns; both are resized when needed.
  static void rotate_into(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                          torch::Tensor& out, torch::Tensor& tmp);

  // Rotates each of the `heads` vectors of x ([heads * d], fp32) in place at
  // one position, whose angles come from angles_at().
  static void rotate_in_place(float* x, int64_t heads, int64_t d, const float* cos, const float* sin);

  // fp32 cos and sin [rows, d/2] of positions 0 .. rows - 1, grown by doubling;
  // the views stay valid until a call that grows the table.
  const torch::Tensor& slot_cos(int64_t rows);
  const torch::Tensor& slot_sin(int64_t rows);

 private:
  void ensure_slots(int64_t rows);
  std::vector<double> inv_freq_;       // [d / 2]
  torch::Tensor slot_cos_, slot_sin_;  // [capacity, d / 2] fp32
};

// x [..., T, d]; positions [T] (any integer or float dtype). Returns a new tensor.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& positions, const RopeParams& p);
// Convenience: positions start, start + 1, ..., start + T - 1.
torch::Tensor apply_rope(const torch::Tensor& x, int64_t start, const RopeParams& p);

}  // namespace lococo
