// What learned retention is taught (lococo/train/train_retention.h): for one
// row of tokens read by the frozen model, every layer's keys (before RoPE) and
// values, and per layer and KV head how much each token mattered to tokens far
// after it. Two measures (--target):
//
//   far-attention  the most attention one query >= `far` tokens later gave the
//                  token, summed over the query heads of its KV head
//                  (lococo/kv/far_attention.h). Tokens: all but the last
//                  `horizon`.
//   loss-gradient  -dL/db (0 if negative): L the LM loss of the row's last
//                  `horizon` tokens, read as one chunk after the rest with a
//                  logit bias b on every earlier token; the gain in loss were
//                  the token given more attention. Read where a bounded cache
//                  would be, not at the full cache: every candidate keeps a
//                  `share` of its attention (1e-4: its logit less 9.2; the
//                  first kRetentionSinks tokens and the last `far` keep all of
//                  theirs).
//                  A mild share (0.05) leaves an induction head's copy as
//                  confident as before, with no gradient. There the model misses what
//                  it lost; an induction head looks as hard at a repeated name
//                  the model predicts anyway as at a random digit it must
//                  copy, but only the digit moves the loss. Tokens: all but
//                  the last horizon + far.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "lococo/kv/cache.h"
#include "lococo/model/model.h"

namespace lococo {

// The stream's first tokens, always kept (the attention sinks): whole in the
// loss-gradient reading.
constexpr int64_t kRetentionSinks = 4;

enum class RetentionTarget { FarAttention, LossGradient };
RetentionTarget parse_retention_target(const std::string& s);  // "far-attention" | "loss-gradient"
std::string to_string(RetentionTarget t);

struct RetentionRow {
  std::vector<torch::Tensor> keys, values;  // [layers] x [Hkv, n, d] fp32
  std::vector<torch::Tensor> targets;       // [layers] x [Hkv, n] fp32, >= 0
  std::vector<torch::Tensor> weights;       // [layers] x [n] fp32 token weights in a loss on targets (empty = 1)
  std::vector<torch::Tensor> copied;        // [layers] x [n] fp32 copy labels of a copy head, 1 or 0 (empty = none)
  int64_t n = 0;                            // tokens with a target (a prefix of the row)
};

// row: [T] int64 token ids. `chunk` tokens per forward for all but the loss
// chunk. Throws std::invalid_argument if T leaves no token with a target or
// share is outside (0, 1].
RetentionRow retention_targets(const LlamaModel& model, const torch::Tensor& row, int64_t chunk,
                               RetentionTarget target, int64_t far, int64_t horizon, double share = 1e-4);

}  // namespace lococo

namespace lococo {

// What loss-gradient differentiates: the mean LM loss of the row's last
// `horizon` tokens (each predicting the next), read as one chunk after the
// other T - horizon tokens (read `chunk` at a time, without gradient), with
// bias[i] [Hkv, T - horizon] added to every logit of those tokens in layer i.
// If `slots` is given, its keys and values get every layer's stored prefix.
// [] scalar in the model's dtype (at least fp32).
torch::Tensor far_loss(const LlamaModel& model, const torch::Tensor& row, int64_t chunk, int64_t horizon,
                       const std::vector<torch::Tensor>& bias, RetentionRow* slots = nullptr);

}  // namespace lococo
