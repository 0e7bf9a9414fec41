#include "lococo/model/gguf_llama.h"

#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/tokenizer/gguf_vocab.h"
#include "lococo/core/io_util.h"
#include "lococo/ops/rope.h"
#include "lococo/model/weights.h"

namespace lococo {
namespace {

using nlohmann::json;

// Hugging Face name pieces -> llama.cpp's, inside a layer ("model.layers.N.").
const std::pair<const char*, const char*> kLayerNames[] = {
    {"input_layernorm", "attn_norm"},     {"self_attn.q_proj", "attn_q"},   {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},       {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},        {"mlp.up_proj", "ffn_up"},        {"mlp.down_proj", "ffn_down"},
};

struct Arch {
  const char* gguf;     // general.architecture
  const char* hf;       // config architecture
  bool permuted_qk;     // llama.cpp stores Q/K rows in its RoPE layout
  bool attention_bias;  // q/k/v carry biases
};
const Arch kArchs[] = {
    {"llama", "LlamaForCausalLM", true, false},
    {"llama", "MistralForCausalLM", true, false},
    {"qwen2", "Qwen2ForCausalLM", false, true},
};

const Arch& arch_by_gguf(const GgufFile& f) {
  const auto& v = f.at("general.architecture");
  const std::string name = v.value.is_string() ? v.value.get<std::string>() : "";
  for (const auto& a : kArchs)
    if (name == a.gguf) return a;
  throw std::runtime_error(fmt::format("{}: general.architecture '{}' is not supported (llama, qwen2)", f.path().string(), name));
}

const Arch& arch_by_hf(const ModelConfig& c) {
  for (const auto& a : kArchs)
    if (c.architecture == a.hf) return a;
  throw std::invalid_argument("export-gguf: architecture " + c.architecture + " has no GGUF mapping");
}

// The rows of a Q or K projection ([heads * d, ...] or a bias [heads * d]) between
// Hugging Face's order (per head: first half, second half of d) and llama.cpp's
// (the halves interleaved).
torch::Tensor permute_rope_rows(const torch::Tensor& w, int64_t heads, bool to_gguf) {
  std::vector<int64_t> split = {heads, 2, w.size(0) / heads / 2};
  if (!to_gguf) std::swap(split[1], split[2]);
  for (int64_t i = 1; i < w.dim(); ++i) split.push_back(w.size(i));
  return w.reshape(split).transpose(1, 2).reshape(w.sizes()).contiguous();
}

// Which head count a Q/K tensor is permuted with (0: not permuted).
int64_t rope_heads(const std::string& hf_name, const ModelConfig& c) {
  if (hf_name.find("self_attn.q_proj") != std::string::npos) return c.num_heads;
  if (hf_name.find("self_attn.k_proj") != std::string::npos) return c.num_kv_heads;
  return 0;
}

// What llama.cpp's rope_freqs.weight holds for this config: the divisors that
// turn plain RoPE frequencies into the scaled ones; empty when there is no
// per-frequency scaling (none, or linear, which has a metadata key).
std::vector<double> rope_frequency_divisors(const ModelConfig& c) {
  if (c.rope_scaling.type != "llama3" && c.rope_scaling.frequency_divisors.empty()) return {};
  RopeScaling linear_part;
  if (c.rope_scaling.type == "linear") {
    linear_part.type = "linear";
    linear_part.factor = c.rope_scaling.factor;
  }
  const std::vector<double> plain = RopeParams{c.rope_theta, linear_part}.inv_freq(c.head_dim);
  const std::vector<double> scaled = RopeParams::from(c).inv_freq(c.head_dim);
  std::vector<double> out(plain.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = plain[i] / scaled[i];
  return out;
}

}  // namespace

std::string gguf_tensor_name(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+)\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(hf, m, layer))
    for (auto [from, to] : kLayerNames)
      if (m[2] == from) return fmt::format("blk.{}.{}.{}", m[1].str(), to, m[3].str());
  throw std::invalid_argument("no GGUF tensor name for '" + hf + "'");
}

ModelConfig config_from_gguf(const GgufFile& f) {
  const Arch& arch = arch_by_gguf(f);
  const std::string p = std::string(arch.gguf) + ".";
  ModelConfig c;
  c.architecture = arch.hf;
  c.attention_bias = arch.attention_bias;
  c.hidden_size = f.count(p + "embedding_length");
  c.num_layers = f.count(p + "block_count");
  c.intermediate_size = f.count(p + "feed_forward_length");
  c.num_heads = f.count(p + "attention.head_count");
  c.num_kv_heads = f.count(p + "attention.head_count_kv", c.num_heads);
  c.head_dim = f.count(p + "attention.key_length", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  c.rms_norm_eps = f.number(p + "attention.layer_norm_rms_epsilon", 1e-5);
  c.rope_theta = f.number(p + "rope.freq_base", 10000.0);
  c.max_position_embeddings = f.count(p + "context_length", 2048);
  const GgufTensorInfo* embed = f.find("token_embd.weight");
  if (!embed) throw std::runtime_error(f.path().string() + ": tensor 'token_embd.weight' is missing");
  c.vocab_size = embed->shape()[0];
  c.tie_word_embeddings = f.find("output.weight") == nullptr;
  c.attention_bias = arch.attention_bias || f.find("blk.0.attn_q.bias") != nullptr;
  if (f.has(p + "rope.scaling.type")) {
    const std::string type = f.text(p + "rope.scaling.type", "none");
    if (type == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = f.number(p + "rope.scaling.factor");
    } else if (type != "none") {
      throw std::runtime_error(fmt::format("{}: {}rope.scaling.type '{}' is not supported (none, linear)",
                                           f.path().string(), p, type));
    }
  }
  // Llama 3.1+ files carry their llama3 RoPE scaling as per-frequency divisors
  // in this tensor (llama.cpp: theta_i = pos * base^(-2i/d) / rope_freqs[i]).
  if (const GgufTensorInfo* freqs = f.find("rope_freqs.weight")) {
    if (freqs->type != GgmlType::kF32 || freqs->shape().size() != 1)
      throw std::runtime_error(f.path().string() + ": tensor 'rope_freqs.weight' must be a 1-D F32 tensor");
    const torch::Tensor t = f.tensor("rope_freqs.weight");
    c.rope_scaling.frequency_divisors.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  }
  c.bos_token_id = f.count("tokenizer.ggml.bos_token_id", 1);
  c.eos_token_id = f.count("tokenizer.ggml.eos_token_id", 2);
  c.validate(f.path().string());
  return c;
}

LoadedModel load_gguf_model(const std::filesystem::path& path, const ModelOptions& options) {
  GgufFile f(path);
  const Arch& arch = arch_by_gguf(f);
  ModelConfig config = config_from_gguf(f);
  LlamaWeights weights = load_weights_from(config, options, [&](const std::string& hf) -> SourceTensor {
    const std::string name = gguf_tensor_name(hf);
    if (!f.find(name)) throw std::runtime_error(fmt::format("{}: tensor '{}' is missing", path.string(), name));
    torch::Tensor t = f.tensor(name);
    if (const int64_t heads = rope_heads(hf, config); heads && arch.permuted_qk) {
      if (t.size(0) != heads * config.head_dim)
        throw std::runtime_error(fmt::format("{}: tensor '{}' has {} rows, expected {}", path.string(), name, t.size(0),
                                             heads * config.head_dim));
      t = permute_rope_rows(t, heads, /*to_gguf=*/false);
    }
    return {t, fmt::format("{}: tensor '{}'", path.string(), name)};
  }, "the file's metadata");
  LoadedModel out;
  out.dir = path;
  out.format = "GGUF v" + std::to_string(f.version());
  auto tok = load_gguf_tokenizer(f);
  if (tok->vocab_size() > config.vocab_size)
    throw std::runtime_error(fmt::format("{}: {} tokens but token_embd.weight has {} rows", path.string(),
                                         tok->vocab_size(), config.vocab_size));
  out.tokenizer = tok;
  out.model = std::make_shared<LlamaModel>(std::move(config), std::move(weights), options);
  return out;
}

void export_gguf(const LlamaModel& model, const GgufTokenizer& tokenizer, const std::filesystem::path& out,
                 GgmlType type, const std::string& name) {
  const ModelConfig& c = model.config();
  const Arch& arch = arch_by_hf(c);
  if (arch.attention_bias && (!c.attention_bias || c.num_heads * c.head_dim != c.hidden_size))
    throw std::invalid_argument(fmt::format("export-gguf: llama.cpp's {} needs q/k/v biases and num_heads x head_dim = "
                                            "hidden_size ({} x {} vs {})", arch.gguf, c.num_heads, c.head_dim, c.hidden_size));
  const std::string p = std::string(arch.gguf) + ".";
  GgufWriter w;
  // llama.cpp's general.file_type: the "mostly" type of the weights.
  const std::map<GgmlType, uint32_t> file_type = {{GgmlType::kF32, 0}, {GgmlType::kF16, 1}, {GgmlType::kQ4_0, 2},
                                                  {GgmlType::kQ8_0, 7}, {GgmlType::kBF16, 32}};
  w.set("general.architecture", GgufValue::string(arch.gguf));
  w.set("general.name", GgufValue::string(name));
  w.set("general.file_type", GgufValue::u32(file_type.at(type)));
  w.set(p + "context_length", GgufValue::u32(static_cast<uint32_t>(c.max_position_embeddings)));
  w.set(p + "embedding_length", GgufValue::u32(static_cast<uint32_t>(c.hidden_size)));
  w.set(p + "block_count", GgufValue::u32(static_cast<uint32_t>(c.num_layers)));
  w.set(p + "feed_forward_length", GgufValue::u32(static_cast<uint32_t>(c.intermediate_size)));
  w.set(p + "attention.head_count", GgufValue::u32(static_cast<uint32_t>(c.num_heads)));
  w.set(p + "attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(c.num_kv_heads)));
  w.set(p + "attention.key_length", GgufValue::u32(static_cast<uint32_t>(c.head_dim)));
  w.set(p + "attention.value_length", GgufValue::u32(static_cast<uint32_t>(c.head_dim)));
  w.set(p + "attention.layer_norm_rms_epsilon", GgufValue::f32(c.rms_norm_eps));
  w.set(p + "rope.freq_base", GgufValue::f32(c.rope_theta));
  w.set(p + "rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(c.head_dim)));
  w.set(p + "vocab_size", GgufValue::u32(static_cast<uint32_t>(c.vocab_size)));
  if (c.rope_scaling.type == "linear") {
    w.set(p + "rope.scaling.type", GgufValue::string("linear"));
    w.set(p + "rope.scaling.factor", GgufValue::f32(c.rope_scaling.factor));
  }

  // llama3 scaling has no metadata form in llama.cpp: its converter writes the
  // resulting per-frequency divisors as a tensor instead (so does this).
  const std::vector<double> divisors = rope_frequency_divisors(c);
  if (!divisors.empty())
    w.add_tensor("rope_freqs.weight", torch::tensor(divisors, torch::kFloat64).to(torch::kFloat32), GgmlType::kF32);

  for (const auto& [key, value] : tokenizer.keys) w.set(key, value);

  for (const auto& [hf, t] : model.weights().named(c)) {
    torch::Tensor v = t->detach().to(torch::kCPU, torch::kFloat32);
    if (const int64_t heads = rope_heads(hf, c); heads && arch.permuted_qk) v = permute_rope_rows(v, heads, /*to_gguf=*/true);
    // 1-D tensors (norms, biases) stay F32, as llama.cpp's converter keeps them;
    // rows that are no whole number of 32-value blocks fall back to F16.
    const bool whole_blocks = v.size(-1) % 32 == 0;
    const bool quantised = type == GgmlType::kQ8_0 || type == GgmlType::kQ4_0;
    w.add_tensor(gguf_tensor_name(hf), v, v.dim() == 1 ? GgmlType::kF32 : quantised && !whole_blocks ? GgmlType::kF16 : type);
  }
  w.write(out);
}

void export_gguf(const LlamaModel& model, const SentencePieceModel& tokenizer, const std::filesystem::path& out,
                 GgmlType type, const std::string& name) {
  export_gguf(model, gguf_tokenizer(tokenizer, model.config().vocab_size, true), out, type, name);
}

}  // namespace lococo
