// LoRA adapters on the attention projections: W x + (alpha / r) B A x, with A
// [r, in] random and B [out, r] zero at the start, so a fresh adapter leaves the
// model's outputs unchanged.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "lococo/model/model.h"

namespace lococo {

struct LoraOptions {
  int64_t rank = 8;                                  // r
  double alpha = 16.0;                               // scale = alpha / r
  std::vector<std::string> targets = {"q", "k", "v", "o"};  // projections that get an adapter
  uint64_t seed = 0;                                 // initialisation of A
};

// Attaches adapters (requires_grad on) and returns them named
// "model.layers.N.self_attn.q_proj.lora_A", ... Throws std::invalid_argument
// for an unknown target or a non-positive rank.
std::vector<std::pair<std::string, torch::Tensor>> attach_lora(LlamaModel& model, const LoraOptions& options);

// Folds every adapter into its weight (W += scale B A) and removes it.
void merge_lora(LlamaModel& model);

// The adapters of a model, named as attach_lora names them.
std::vector<std::pair<std::string, torch::Tensor>> lora_tensors(LlamaModel& model);

}  // namespace lococo
