#include "lococo/core/config.h"

#include <cmath>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lococo/core/io_util.h"

namespace lococo {
namespace {

using nlohmann::json;

// Reads an optional field with a type check that names the field on failure.
template <typename T>
void read_field(const json& j, const char* key, T& out, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const json::exception&) {
    throw std::runtime_error(fmt::format("{}: field '{}' has the wrong type ({})", source, key,
                                         it->type_name()));
  }
}

template <typename T>
void read_required(const json& j, const char* key, T& out, const std::string& source) {
  if (!j.contains(key)) throw std::runtime_error(fmt::format("{}: missing field '{}'", source, key));
  read_field(j, key, out, source);
}

// eos_token_id may be a list in newer HF configs; the first entry is used.
int64_t read_token_id(const json& j, const char* key, int64_t fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<int64_t>();
  if (it->is_number_integer()) return it->get<int64_t>();
  throw std::runtime_error(fmt::format("{}: field '{}' must be an integer", source, key));
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw std::runtime_error(source + ": config must be a JSON object");
  ModelConfig c;
  if (j.contains("architectures")) {
    const auto& a = j["architectures"];
    if (!a.is_array() || a.empty() || !a[0].is_string())
      throw std::runtime_error(source + ": field 'architectures' must be a list of strings");
    c.architecture = a[0].get<std::string>();
  }
  static const char* kSupported[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
  bool supported = false;
  for (auto* s : kSupported) supported |= c.architecture == s;
  if (!supported)
    throw std::runtime_error(fmt::format(
        "{}: unsupported architecture '{}' (supported: LlamaForCausalLM, MistralForCausalLM, "
        "Qwen2ForCausalLM)", source, c.architecture));
  if (c.architecture == "Qwen2ForCausalLM") c.attention_bias = true;

  read_required(j, "vocab_size", c.vocab_size, source);
  read_required(j, "hidden_size", c.hidden_size, source);
  read_required(j, "intermediate_size", c.intermediate_size, source);
  read_required(j, "num_hidden_layers", c.num_layers, source);
  read_required(j, "num_attention_heads", c.num_heads, source);
  c.num_kv_heads = c.num_heads;
  read_field(j, "num_key_value_heads", c.num_kv_heads, source);
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  read_field(j, "head_dim", c.head_dim, source);
  read_field(j, "rms_norm_eps", c.rms_norm_eps, source);
  read_field(j, "rope_theta", c.rope_theta, source);
  read_field(j, "max_position_embeddings", c.max_position_embeddings, source);
  read_field(j, "tie_word_embeddings", c.tie_word_embeddings, source);
  read_field(j, "attention_bias", c.attention_bias, source);
  c.bos_token_id = read_token_id(j, "bos_token_id", c.bos_token_id, source);
  c.eos_token_id = read_token_id(j, "eos_token_id", c.eos_token_id, source);

  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw std::runtime_error(source + ": field 'rope_scaling' must be an object");
    std::string type = "none";
    read_field(*it, "type", type, source + " rope_scaling");
    read_field(*it, "rope_type", type, source + " rope_scaling");
    if (type != "linear" && type != "llama3" && type != "none" && type != "default")
      throw std::runtime_error(fmt::format(
          "{}: rope_scaling type '{}' is not supported (supported: linear, llama3)", source, type));
    c.rope_scaling.type = type == "default" ? "none" : type;
    read_field(*it, "factor", c.rope_scaling.factor, source);
    if (type == "llama3") {
      read_field(*it, "low_freq_factor", c.rope_scaling.low_freq_factor, source);
      read_field(*it, "high_freq_factor", c.rope_scaling.high_freq_factor, source);
      read_field(*it, "original_max_position_embeddings", c.rope_scaling.original_max_position, source);
    }
  }
  // Not a Hugging Face field: how a model loaded from GGUF with
  // rope_freqs.weight keeps its frequencies when saved as a directory.
  if (auto it = j.find("rope_frequency_divisors"); it != j.end()) {
    if (!it->is_array()) throw std::runtime_error(source + ": field 'rope_frequency_divisors' must be an array");
    for (const auto& v : *it) {
      if (!v.is_number()) throw std::runtime_error(source + ": field 'rope_frequency_divisors' must hold numbers");
      c.rope_scaling.frequency_divisors.push_back(v.get<double>());
    }
  }
  c.validate(source);
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& file) {
  return from_json(parse_json(read_text_file(file), file.string()), file.string());
}

json ModelConfig::to_json() const {
  json j = {
      {"architectures", {architecture}},
      {"model_type", architecture == "Qwen2ForCausalLM" ? "qwen2"
                     : architecture == "MistralForCausalLM" ? "mistral" : "llama"},
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_layers},
      {"num_attention_heads", num_heads},
      {"num_key_value_heads", num_kv_heads},
      {"head_dim", head_dim},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"max_position_embeddings", max_position_embeddings},
      {"tie_word_embeddings", tie_word_embeddings},
      {"attention_bias", attention_bias},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_id},
      {"hidden_act", "silu"},
      {"torch_dtype", "float32"},
  };
  if (rope_scaling.type == "linear")
    j["rope_scaling"] = {{"type", "linear"}, {"factor", rope_scaling.factor}};
  if (rope_scaling.type == "llama3")
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", rope_scaling.factor},
                         {"low_freq_factor", rope_scaling.low_freq_factor},
                         {"high_freq_factor", rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", rope_scaling.original_max_position}};
  if (!rope_scaling.frequency_divisors.empty()) j["rope_frequency_divisors"] = rope_scaling.frequency_divisors;
  return j;
}

void ModelConfig::save(const std::filesystem::path& file) const {
  write_text_atomic(file, to_json().dump(2) + "\n");
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) throw std::runtime_error(fmt::format("{}: field '{}' must be positive (got {})", source, name, v));
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_hidden_layers");
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(max_position_embeddings, "max_position_embeddings");
  if (num_heads % num_kv_heads != 0)
    throw std::runtime_error(fmt::format(
        "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source,
        num_heads, num_kv_heads));
  if (head_dim % 2 != 0)
    throw std::runtime_error(fmt::format("{}: head_dim ({}) must be even for RoPE", source, head_dim));
  if (!(rms_norm_eps > 0)) throw std::runtime_error(source + ": field 'rms_norm_eps' must be positive");
  if (!(rope_theta > 0)) throw std::runtime_error(source + ": field 'rope_theta' must be positive");
  if (!(rope_scaling.factor > 0))
    throw std::runtime_error(source + ": rope_scaling.factor must be positive");
  if (rope_scaling.type == "llama3" &&
      !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor && rope_scaling.low_freq_factor > 0 &&
        rope_scaling.original_max_position > 0))
    throw std::runtime_error(source + ": rope_scaling (llama3) needs high_freq_factor > low_freq_factor > 0 and a "
                                      "positive original_max_position_embeddings");
  const auto& divisors = rope_scaling.frequency_divisors;
  if (!divisors.empty() && static_cast<int64_t>(divisors.size()) != head_dim / 2)
    throw std::runtime_error(fmt::format("{}: rope_frequency_divisors has {} values, head_dim / 2 = {} expected", source,
                                         divisors.size(), head_dim / 2));
  for (double v : divisors)
    if (!(v > 0) || !std::isfinite(v))
      throw std::runtime_error(fmt::format("{}: rope_frequency_divisors must be positive and finite (got {})", source, v));
  if (bos_token_id >= vocab_size || eos_token_id >= vocab_size)
    throw std::runtime_error(source + ": bos/eos token id outside the vocabulary");
}

int64_t ModelConfig::parameter_count() const {
  const int64_t attn = hidden_size * q_dim() * 2 + hidden_size * kv_dim() * 2 +
                       (attention_bias ? q_dim() + 2 * kv_dim() : 0);
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t per_layer = attn + mlp + 2 * hidden_size;
  const int64_t embed = vocab_size * hidden_size;
  return embed * (tie_word_embeddings ? 1 : 2) + num_layers * per_layer + hidden_size;
}

int64_t ModelConfig::kv_bytes_per_token(int64_t element_size) const {
  return 2 * num_layers * kv_dim() * element_size;
}

std::string dtype_name(torch::Dtype d) {
  return d == torch::kBFloat16 ? "bf16" : d == torch::kFloat16 ? "f16" : d == torch::kFloat64 ? "f64" : "f32";
}

torch::Dtype parse_dtype(const std::string& name, const std::string& flag) {
  for (torch::Dtype d : {torch::kFloat32, torch::kBFloat16, torch::kFloat16, torch::kFloat64})
    if (dtype_name(d) == name) return d;
  throw std::invalid_argument(flag + ": unknown dtype '" + name + "' (f32, bf16, f16)");
}

}  // namespace lococo
