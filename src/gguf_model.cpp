#include "lococo/gguf_model.h"

#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/hf_tokenizer.h"
#include "lococo/weights.h"

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

// Numeric metadata, checked: a missing optional key gives `fallback`.
double number(const GgufFile& f, const std::string& key, std::optional<double> fallback = std::nullopt) {
  if (!f.has(key)) {
    if (fallback) return *fallback;
    f.at(key);  // throws "missing"
  }
  const auto& v = f.at(key).value;
  if (!v.is_number()) throw std::runtime_error(fmt::format("{}: metadata '{}' is not a number", f.path().string(), key));
  return v.get<double>();
}
int64_t integer(const GgufFile& f, const std::string& key, std::optional<int64_t> fallback = std::nullopt) {
  const double v = number(f, key, fallback ? std::optional<double>(static_cast<double>(*fallback)) : std::nullopt);
  if (v != std::floor(v) || v < 0 || v > 1e12)
    throw std::runtime_error(fmt::format("{}: metadata '{}' = {} is not a count", f.path().string(), key, v));
  return static_cast<int64_t>(v);
}

// String and boolean metadata, checked: a wrong type is an error naming the key,
// not a JSON exception; a missing key gives `fallback`.
std::string text_or(const GgufFile& f, const std::string& key, const std::string& fallback) {
  if (!f.has(key)) return fallback;
  const auto& v = f.at(key).value;
  if (!v.is_string()) throw std::runtime_error(fmt::format("{}: metadata '{}' is not a string", f.path().string(), key));
  return v.get<std::string>();
}
bool flag_or(const GgufFile& f, const std::string& key, bool fallback) {
  if (!f.has(key)) return fallback;
  const auto& v = f.at(key).value;
  if (!v.is_boolean()) throw std::runtime_error(fmt::format("{}: metadata '{}' is not a bool", f.path().string(), key));
  return v.get<bool>();
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

const json& array_of(const GgufFile& f, const std::string& key, GgufValueType element, size_t n) {
  const auto& v = f.at(key);
  if (v.type != GgufValueType::kArray || v.element_type != element)
    throw std::runtime_error(fmt::format("{}: metadata '{}' is not an array of the expected type", f.path().string(), key));
  if (n != 0 && v.value.size() != n)
    throw std::runtime_error(fmt::format("{}: metadata '{}' has {} entries, tokenizer.ggml.tokens {}", f.path().string(),
                                         key, v.value.size(), n));
  return v.value;
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
  c.hidden_size = integer(f, p + "embedding_length");
  c.num_layers = integer(f, p + "block_count");
  c.intermediate_size = integer(f, p + "feed_forward_length");
  c.num_heads = integer(f, p + "attention.head_count");
  c.num_kv_heads = integer(f, p + "attention.head_count_kv", c.num_heads);
  c.head_dim = integer(f, p + "attention.key_length", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  c.rms_norm_eps = number(f, p + "attention.layer_norm_rms_epsilon", 1e-5);
  c.rope_theta = number(f, p + "rope.freq_base", 10000.0);
  c.max_position_embeddings = integer(f, p + "context_length", 2048);
  const GgufTensorInfo* embed = f.find("token_embd.weight");
  if (!embed) throw std::runtime_error(f.path().string() + ": tensor 'token_embd.weight' is missing");
  c.vocab_size = embed->shape()[0];
  c.tie_word_embeddings = f.find("output.weight") == nullptr;
  if (f.has(p + "rope.scaling.type")) {
    const std::string type = text_or(f, p + "rope.scaling.type", "none");
    if (type == "linear") {
      c.rope_scaling = {"linear", number(f, p + "rope.scaling.factor")};
    } else if (type != "none") {
      throw std::runtime_error(fmt::format("{}: {}rope.scaling.type '{}' is not supported (none, linear)",
                                           f.path().string(), p, type));
    }
  }
  // Llama 3.1+ files carry their llama3 RoPE scaling as per-frequency divisors
  // in this tensor; running without them would give wrong logits.
  if (f.find("rope_freqs.weight"))
    throw std::runtime_error(f.path().string() + ": per-frequency RoPE factors (tensor 'rope_freqs.weight', Llama 3.1+) "
                                                 "are not supported in GGUF files yet; load the Hugging Face directory");
  c.bos_token_id = integer(f, "tokenizer.ggml.bos_token_id", 1);
  c.eos_token_id = integer(f, "tokenizer.ggml.eos_token_id", 2);
  c.validate(f.path().string());
  return c;
}

SentencePieceModel tokenizer_from_gguf(const GgufFile& f) {
  const std::string file = f.path().string();
  const std::string kind = text_or(f, "tokenizer.ggml.model", "");
  if (kind != "llama")
    throw std::runtime_error(fmt::format("{}: tokenizer.ggml.model '{}' is not supported (llama: SentencePiece)", file, kind));
  const json& tokens = array_of(f, "tokenizer.ggml.tokens", GgufValueType::kString, 0);
  const json* scores = f.has("tokenizer.ggml.scores")
                           ? &array_of(f, "tokenizer.ggml.scores", GgufValueType::kFloat32, tokens.size()) : nullptr;
  const json* types = f.has("tokenizer.ggml.token_type")
                          ? &array_of(f, "tokenizer.ggml.token_type", GgufValueType::kInt32, tokens.size()) : nullptr;
  SentencePieceModel m;
  m.model_type = 2;  // llama.cpp's "llama" tokenizer merges by score: SentencePiece BPE
  for (size_t i = 0; i < tokens.size(); ++i) {
    SentencePieceModel::Piece piece{tokens[i].get<std::string>(), scores ? (*scores)[i].get<float>() : 0.0f,
                                    types ? (*types)[i].get<int>() : SentencePieceModel::kNormal};
    if (piece.type < SentencePieceModel::kNormal || piece.type > SentencePieceModel::kByte)
      throw std::runtime_error(fmt::format("{}: tokenizer.ggml.token_type[{}] = {} is not a token type", file, i, piece.type));
    m.byte_fallback |= piece.type == SentencePieceModel::kByte;
    m.pieces.push_back(std::move(piece));
  }
  const auto n = static_cast<int64_t>(tokens.size());
  auto id = [&](const std::string& key, int64_t fallback) {
    const int64_t v = integer(f, key, fallback);
    if (v >= n) throw std::runtime_error(fmt::format("{}: {} = {} is beyond the {} tokens", file, key, v, n));
    return static_cast<int>(v);
  };
  m.unk_id = id("tokenizer.ggml.unknown_token_id", 0);
  m.bos_id = id("tokenizer.ggml.bos_token_id", 1);
  m.eos_id = id("tokenizer.ggml.eos_token_id", 2);
  m.pad_id = f.has("tokenizer.ggml.padding_token_id") ? id("tokenizer.ggml.padding_token_id", 0) : -1;
  if (m.pad_id == m.unk_id || m.pad_id == m.bos_id || m.pad_id == m.eos_id) m.pad_id = -1;
  m.add_dummy_prefix = flag_or(f, "tokenizer.ggml.add_space_prefix", true);
  m.remove_extra_whitespaces = flag_or(f, "tokenizer.ggml.remove_extra_whitespaces", false);
  if (f.has("tokenizer.ggml.precompiled_charsmap")) {
    for (const auto& b : array_of(f, "tokenizer.ggml.precompiled_charsmap", GgufValueType::kUint8, 0))
      m.precompiled_charsmap.push_back(static_cast<char>(b.get<uint8_t>()));
    m.normalizer_name = "precompiled";
  }
  return m;
}

std::shared_ptr<Tokenizer> load_gguf_tokenizer(const GgufFile& f) {
  const std::string file = f.path().string();
  const std::string kind = text_or(f, "tokenizer.ggml.model", "");
  if (kind == "llama") return std::make_shared<SentencePieceTokenizer>(tokenizer_from_gguf(f).serialize(), file + " (tokenizer)");
  if (kind != "gpt2")
    throw std::runtime_error(fmt::format("{}: tokenizer.ggml.model '{}' is not supported (llama, gpt2)", file, kind));
  // Byte-level BPE: the same thing a tokenizer.json describes, so build one.
  const json& tokens = array_of(f, "tokenizer.ggml.tokens", GgufValueType::kString, 0);
  const json& merges = array_of(f, "tokenizer.ggml.merges", GgufValueType::kString, 0);
  const json* types = f.has("tokenizer.ggml.token_type")
                          ? &array_of(f, "tokenizer.ggml.token_type", GgufValueType::kInt32, tokens.size()) : nullptr;
  const std::string pre = text_or(f, "tokenizer.ggml.pre", "default");
  json j;
  j["model"] = {{"type", "BPE"}, {"vocab", json::object()}, {"merges", merges}, {"ignore_merges", pre == "llama-bpe"}};
  j["added_tokens"] = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    j["model"]["vocab"][tokens[i].get<std::string>()] = i;
    const int type = types ? (*types)[i].get<int>() : SentencePieceModel::kNormal;
    if (type == SentencePieceModel::kControl || type == SentencePieceModel::kUserDefined)  // matched verbatim
      j["added_tokens"].push_back({{"id", i}, {"content", tokens[i]}});
  }
  // Pre-tokenizer patterns of the models llama.cpp names in tokenizer.ggml.pre.
  const std::string llama3 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string qwen2 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", pre == "default" || pre == "gpt-2"}};
  if (pre == "default" || pre == "gpt-2") {
    j["pre_tokenizer"] = byte_level;
  } else if (pre == "llama-bpe" || pre == "qwen2") {
    const json split = {{"type", "Split"}, {"pattern", {{"Regex", pre == "qwen2" ? qwen2 : llama3}}}, {"behavior", "Isolated"}};
    j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split, byte_level}}};
  } else {
    throw std::runtime_error(fmt::format("{}: tokenizer.ggml.pre '{}' is not supported (default, gpt-2, llama-bpe, qwen2)", file, pre));
  }
  const int64_t bos = f.has("tokenizer.ggml.bos_token_id") ? integer(f, "tokenizer.ggml.bos_token_id") : -1;
  const int64_t eos = f.has("tokenizer.ggml.eos_token_id") ? integer(f, "tokenizer.ggml.eos_token_id") : -1;
  return std::make_shared<HfBpeTokenizer>(j, file + " (tokenizer)", bos, eos);
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

void export_gguf(const LlamaModel& model, const SentencePieceModel& tokenizer, const std::filesystem::path& out,
                 GgmlType type, const std::string& name) {
  const ModelConfig& c = model.config();
  const Arch& arch = arch_by_hf(c);
  if (c.rope_scaling.type != "none" && c.rope_scaling.type != "linear")
    throw std::invalid_argument("export-gguf: rope scaling '" + c.rope_scaling.type + "' has no GGUF form here");
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

  // The tokenizer, padded with unused pieces up to the embedding rows (llama.cpp
  // wants one token per row).
  json tokens = json::array(), scores = json::array(), types = json::array();
  for (const auto& piece : tokenizer.pieces) {
    tokens.push_back(piece.text);
    scores.push_back(piece.score);
    types.push_back(piece.type);
  }
  if (static_cast<int64_t>(tokens.size()) > c.vocab_size)
    throw std::invalid_argument(fmt::format("export-gguf: the tokenizer has {} pieces, the model {} rows", tokens.size(), c.vocab_size));
  while (static_cast<int64_t>(tokens.size()) < c.vocab_size) {
    tokens.push_back(fmt::format("<unused{}>", tokens.size()));
    scores.push_back(0.0f);
    types.push_back(static_cast<int>(SentencePieceModel::kUnused));
  }
  w.set("tokenizer.ggml.model", GgufValue::string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::array(GgufValueType::kString, tokens));
  w.set("tokenizer.ggml.scores", GgufValue::array(GgufValueType::kFloat32, scores));
  w.set("tokenizer.ggml.token_type", GgufValue::array(GgufValueType::kInt32, types));
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(static_cast<uint32_t>(tokenizer.unk_id)));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(tokenizer.bos_id)));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(tokenizer.eos_id)));
  if (tokenizer.pad_id >= 0) w.set("tokenizer.ggml.padding_token_id", GgufValue::u32(static_cast<uint32_t>(tokenizer.pad_id)));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  w.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));
  w.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(tokenizer.add_dummy_prefix));
  w.set("tokenizer.ggml.remove_extra_whitespaces", GgufValue::boolean(tokenizer.remove_extra_whitespaces));
  if (!tokenizer.precompiled_charsmap.empty()) {
    json bytes = json::array();
    for (char ch : tokenizer.precompiled_charsmap) bytes.push_back(static_cast<uint8_t>(ch));
    w.set("tokenizer.ggml.precompiled_charsmap", GgufValue::array(GgufValueType::kUint8, bytes));
  }

  LlamaWeights weights = model.weights();  // shallow copies: named() wants non-const access
  for (auto& [hf, t] : weights.named(c)) {
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

}  // namespace lococo
