// Rotary position embedding (RoPE), Hugging Face Llama convention: the head
// dimension is split into halves [x1, x2] and rotated as
//   out = [x1 cos - x2 sin, x2 cos + x1 sin],  angle(p, i) = p * inv_freq[i],
//   inv_freq[i] = theta^(-2i/d), adjusted by the config's rope_scaling.
#pragma once

#include <vector>

#include <torch/torch.h>

#include "lococo/config.h"

namespace lococo {

struct RopeParams {
  double theta = 10000.0;
  RopeScaling scaling;  // type "none": plain RoPE
  static RopeParams from(const ModelConfig& c) { return {c.rope_theta, c.rope_scaling}; }

  // The angle per position of each rotated pair: [d / 2] values, scaling applied.
  // The one place RoPE frequencies are computed (forward and decode use it).
  std::vector<double> inv_freq(int64_t head_dim) const;
};

// x [..., T, d]; positions [T] (any integer or float dtype). Returns a new tensor.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& positions, const RopeParams& p);
// Convenience: positions start, start + 1, ..., start + T - 1.
torch::Tensor apply_rope(const torch::Tensor& x, int64_t start, const RopeParams& p);

}  // namespace lococo
