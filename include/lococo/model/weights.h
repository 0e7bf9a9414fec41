// The weights of a Llama-family decoder and how they come from / go to a model
// directory (config.json + model.safetensors or a sharded index + tokenizer).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "lococo/core/config.h"
#include "lococo/io/safetensors.h"

namespace lococo {

// Where and in which dtype the model computes.
struct ModelOptions {
  torch::Dtype dtype = torch::kFloat32;  // compute / storage dtype of the weights
  torch::Device device = torch::kCPU;    // any libtorch device
};

// x [..., in] W^T for W [out, in], with the kernel chosen by shape and dtype:
// the one place that choice is made (Linear and the LM head use it).
torch::Tensor project(const torch::Tensor& x, const torch::Tensor& weight);

// y = x W^T + b, plus an optional LoRA term scale * (x A^T) B^T.
// The one place where the matmul kernel for a projection is chosen.
struct Linear {
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined
  torch::Tensor lora_a;  // [r, in] or undefined
  torch::Tensor lora_b;  // [out, r] or undefined
  double lora_scale = 0.0;

  torch::Tensor forward(const torch::Tensor& x) const;  // x [..., in] -> [..., out]
  int64_t out_features() const { return weight.size(0); }
  int64_t in_features() const { return weight.size(1); }
};

struct LayerWeights {
  torch::Tensor attn_norm;   // [D]
  Linear q, k, v, o;         // q [Hq*d, D], k/v [Hkv*d, D], o [D, Hq*d]
  torch::Tensor mlp_norm;    // [D]
  Linear gate, up, down;     // gate/up [F, D], down [D, F]
};

struct LlamaWeights {
  torch::Tensor embed;         // [V, D]
  std::vector<LayerWeights> layers;
  torch::Tensor final_norm;    // [D]
  torch::Tensor lm_head;       // [V, D]; the same tensor as `embed` when tied

  // Every tensor with its Hugging Face name (tied lm_head listed once, as embed).
  std::vector<std::pair<std::string, torch::Tensor*>> named(const ModelConfig& config);
  std::vector<std::pair<std::string, const torch::Tensor*>> named(const ModelConfig& config) const;
};

// Random initialisation (normal, std 0.02; norms 1), deterministic in `seed`.
LlamaWeights init_weights(const ModelConfig& config, uint64_t seed, const ModelOptions& options = {});

// Loads HF-named weights from `dir` (model.safetensors, or model.safetensors.index.json
// for shards) and checks every shape against `config`. Errors name file and tensor.
LlamaWeights load_weights(const std::filesystem::path& dir, const ModelConfig& config,
                          const ModelOptions& options = {});

// A tensor from some file, with where it came from for error messages
// ("<file>: tensor '<name>'").
struct SourceTensor {
  torch::Tensor value;
  std::string origin;
};

// The weights `config` implies, each fetched by its Hugging Face name (fetch
// throws naming the file when one is missing), shape-checked and converted to
// `options`; `config_source` names where the config came from in shape errors.
// The one loader behind every weight file format.
LlamaWeights load_weights_from(const ModelConfig& config, const ModelOptions& options,
                               const std::function<SourceTensor(const std::string& hf_name)>& fetch,
                               const std::string& config_source);

// Writes `dir/model.safetensors` atomically (fp32 unless `dtype` says otherwise).
void save_weights(const std::filesystem::path& dir, const ModelConfig& config, const LlamaWeights& weights,
                  torch::Dtype dtype = torch::kFloat32);

}  // namespace lococo
