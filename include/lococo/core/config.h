// Model configuration: the hyper-parameters of a Llama-family decoder, read from
// (and written to) a Hugging Face `config.json`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>
#include <nlohmann/json_fwd.hpp>

namespace lococo {

// RoPE position scaling (Hugging Face `rope_scaling`).
//   linear: every angle divided by `factor` (positions interpolated).
//   llama3: per frequency (Llama 3.1+): wavelengths longer than
//           original_max_position_embeddings / low_freq_factor divided by
//           `factor`, shorter than original_max_position_embeddings / high_freq_factor
//           kept, blended linearly in between.
struct RopeScaling {
  std::string type = "none";          // "none" | "linear" | "llama3"
  double factor = 1.0;                // linear and llama3
  double low_freq_factor = 1.0;       // llama3
  double high_freq_factor = 4.0;      // llama3
  int64_t original_max_position = 8192;  // llama3: the context before scaling
  // Per-frequency divisors [head_dim / 2] given as numbers rather than a rule:
  // GGUF files keep Llama 3.1's llama3 scaling this way (tensor
  // rope_freqs.weight). Empty: none. Applied on top of `type`'s rule.
  std::vector<double> frequency_divisors;
};

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // HF `architectures[0]`
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;                // D
  int64_t intermediate_size = 0;          // F, the SwiGLU width
  int64_t num_layers = 0;                 // HF num_hidden_layers
  int64_t num_heads = 0;                  // query heads Hq
  int64_t num_kv_heads = 0;               // key/value heads Hkv (GQA when < Hq)
  int64_t head_dim = 0;                   // d; HF default hidden_size / num_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048; // the trained context T
  bool tie_word_embeddings = false;       // lm_head shares embed_tokens
  bool attention_bias = false;            // q/k/v projections carry a bias (Qwen2)
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;

  // Parses a config.json object; `source` names the file in error messages.
  // Throws std::runtime_error naming the source and the field on bad input.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig load(const std::filesystem::path& file);
  nlohmann::json to_json() const;
  // Atomic write of config.json.
  void save(const std::filesystem::path& file) const;

  // Throws std::runtime_error("<source>: ...") when the numbers are inconsistent.
  void validate(const std::string& source) const;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  int64_t group_size() const { return num_heads / num_kv_heads; }
  int64_t parameter_count() const;
  // Bytes of keys + values one token occupies across all layers.
  int64_t kv_bytes_per_token(int64_t element_size) const;
};

// A dtype as flags and reports spell it: "f32", "bf16", "f16" (and "f64").
std::string dtype_name(c10::ScalarType d);
// The inverse; std::invalid_argument naming `flag` for another name.
c10::ScalarType parse_dtype(const std::string& name, const std::string& flag);

}  // namespace lococo
