// The Llama-family decoder: RMSNorm, RoPE (+ linear scaling), grouped-query
// attention, SwiGLU MLP, optional q/k/v bias, tied or untied embeddings.
//
// The model holds weights only. Per-sequence state (the KV cache) is passed to
// forward(), so one model serves any number of sequences.
#pragma once

#include <filesystem>
#include <memory>

#include <torch/torch.h>

#include "lococo/core/config.h"
#include "lococo/kv/cache.h"
#include "lococo/model/weights.h"

namespace lococo {

enum class LogitsFor {
  All,   // logits for every token of the chunk: [B, T, V]
  Last,  // only for the last token: [B, 1, V]
};

class LlamaModel {
 public:
  LlamaModel(ModelConfig config, LlamaWeights weights, ModelOptions options = {});

  const ModelConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  const LlamaWeights& weights() const { return weights_; }
  LlamaWeights& mutable_weights() { return weights_; }

  // tokens [B, T] (or [T]) int64. With a cache (B must be 1) the chunk continues
  // the cached sequence; without one, each row is a fresh causal sequence.
  // Returns fp32 logits [B, T, V] (or [B, 1, V] for LogitsFor::Last).
  torch::Tensor forward(const torch::Tensor& tokens, KvCache* cache, LogitsFor which = LogitsFor::All) const;

  // The final hidden states [B, T, D] before the LM head (training losses use them).
  torch::Tensor hidden_states(const torch::Tensor& tokens, KvCache* cache) const;
  torch::Tensor logits(const torch::Tensor& hidden) const;  // [..., D] -> [..., V] fp32

 private:
  // chunk: the cache's current chunk, or null for no cache.
  torch::Tensor layer_forward(int i, const torch::Tensor& x, CacheChunk* chunk) const;
  torch::Tensor attention_block(int i, const torch::Tensor& h, CacheChunk* chunk) const;

  ModelConfig config_;
  LlamaWeights weights_;
  ModelOptions options_;
};

}  // namespace lococo
