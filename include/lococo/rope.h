// Rotary position embedding (RoPE), Hugging Face Llama convention: the head
// dimension is split into halves [x1, x2] and rotated as
//   out = [x1 cos - x2 sin, x2 cos + x1 sin],  angle(p, i) = p / scale * theta^(-2i/d).
#pragma once

#include <torch/torch.h>

#include "lococo/config.h"

namespace lococo {

struct RopeParams {
  double theta = 10000.0;
  double scale = 1.0;  // linear scaling factor: positions are divided by it
  static RopeParams from(const ModelConfig& c) {
    return {c.rope_theta, c.rope_scaling.type == "linear" ? c.rope_scaling.factor : 1.0};
  }
};

// x [..., T, d]; positions [T] (any integer or float dtype). Returns a new tensor.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& positions, const RopeParams& p);
// Convenience: positions start, start + 1, ..., start + T - 1.
torch::Tensor apply_rope(const torch::Tensor& x, int64_t start, const RopeParams& p);

}  // namespace lococo
