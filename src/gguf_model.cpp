#include "lococo/gguf_model.h"

#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/hf_tokenizer.h"
#include "lococo/io_util.h"
#include "lococo/rope.h"
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

// The pre-tokenizer patterns of the models llama.cpp names in tokenizer.ggml.pre.
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

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
  c.attention_bias = arch.attention_bias || f.find("blk.0.attn_q.bias") != nullptr;
  if (f.has(p + "rope.scaling.type")) {
    const std::string type = text_or(f, p + "rope.scaling.type", "none");
    if (type == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = number(f, p + "rope.scaling.factor");
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
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", pre == "default" || pre == "gpt-2"}};
  if (pre == "default" || pre == "gpt-2") {
    j["pre_tokenizer"] = byte_level;
  } else if (pre == "llama-bpe" || pre == "qwen2") {
    const json split = {{"type", "Split"}, {"pattern", {{"Regex", pre == "qwen2" ? kQwen2Pattern : kLlama3Pattern}}}, {"behavior", "Isolated"}};
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

void export_gguf(const LlamaModel& model, const SentencePieceModel& tokenizer, const std::filesystem::path& out,
                 GgmlType type, const std::string& name) {
  export_gguf(model, gguf_tokenizer(tokenizer, model.config().vocab_size, true), out, type, name);
}

// ---- tokenizers as tokenizer.ggml.* keys -----------------------------------------------
namespace {

// Tokens padded with unused placeholders up to `rows` (llama.cpp wants one
// token per embedding row, and unique token texts).
void pad_tokens(json& tokens, json& types, json* scores, int64_t rows, const std::string& source) {
  if (static_cast<int64_t>(tokens.size()) > rows)
    throw std::invalid_argument(fmt::format("export-gguf: {} has {} tokens, the model {} embedding rows", source,
                                            tokens.size(), rows));
  while (static_cast<int64_t>(tokens.size()) < rows) {
    tokens.push_back(fmt::format("[PAD{}]", tokens.size()));
    types.push_back(static_cast<int>(SentencePieceModel::kUnused));
    if (scores) scores->push_back(-1000.0f);  // never preferred by a score-ordered merge (llama.cpp ignores the type there)
  }
}

// llama.cpp's tokenizer.ggml.pre name for a byte-level tokenizer.json's pre-tokenizer.
std::string pre_tokenizer_name(const json& pre, const std::string& source) {
  auto is = [](const json& p, const char* type) { return p.is_object() && p.value("type", "") == type; };
  if (is(pre, "ByteLevel") && pre.value("use_regex", true)) return "gpt-2";
  if (is(pre, "Sequence") && pre.contains("pretokenizers") && pre["pretokenizers"].size() == 2) {
    const json& split = pre["pretokenizers"][0];
    if (is(split, "Split") && is(pre["pretokenizers"][1], "ByteLevel") && split.contains("pattern")) {
      const std::string regex = split["pattern"].value("Regex", "");
      if (regex == kLlama3Pattern) return "llama-bpe";
      if (regex == kQwen2Pattern) return "qwen2";
    }
  }
  throw std::invalid_argument(source + ": the pre-tokenizer matches none llama.cpp names here (GPT-2's ByteLevel, "
                                       "Llama 3's or Qwen2's Split regex); it has no GGUF form");
}

}  // namespace

GgufTokenizer gguf_tokenizer(const SentencePieceModel& m, int64_t rows, bool add_bos) {
  json tokens = json::array(), scores = json::array(), types = json::array();
  for (const auto& piece : m.pieces) {
    tokens.push_back(piece.text);
    scores.push_back(piece.score);
    types.push_back(piece.type);
  }
  pad_tokens(tokens, types, &scores, rows, "the tokenizer");
  GgufTokenizer t;
  auto& k = t.keys;
  k.emplace_back("tokenizer.ggml.model", GgufValue::string("llama"));
  k.emplace_back("tokenizer.ggml.tokens", GgufValue::array(GgufValueType::kString, tokens));
  k.emplace_back("tokenizer.ggml.scores", GgufValue::array(GgufValueType::kFloat32, scores));
  k.emplace_back("tokenizer.ggml.token_type", GgufValue::array(GgufValueType::kInt32, types));
  k.emplace_back("tokenizer.ggml.unknown_token_id", GgufValue::u32(static_cast<uint32_t>(m.unk_id)));
  k.emplace_back("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(m.bos_id)));
  k.emplace_back("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(m.eos_id)));
  if (m.pad_id >= 0) k.emplace_back("tokenizer.ggml.padding_token_id", GgufValue::u32(static_cast<uint32_t>(m.pad_id)));
  k.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::boolean(add_bos));
  k.emplace_back("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));
  k.emplace_back("tokenizer.ggml.add_space_prefix", GgufValue::boolean(m.add_dummy_prefix));
  k.emplace_back("tokenizer.ggml.remove_extra_whitespaces", GgufValue::boolean(m.remove_extra_whitespaces));
  if (!m.precompiled_charsmap.empty()) {
    json bytes = json::array();
    for (char ch : m.precompiled_charsmap) bytes.push_back(static_cast<uint8_t>(ch));
    k.emplace_back("tokenizer.ggml.precompiled_charsmap", GgufValue::array(GgufValueType::kUint8, bytes));
  }
  return t;
}

GgufTokenizer gguf_tokenizer_from_json(const json& j, const std::string& source, int64_t rows, int64_t bos, int64_t eos,
                                       bool add_bos) {
  const json* model = j.contains("model") && j["model"].is_object() ? &j["model"] : nullptr;
  if (!model || model->value("type", "") != "BPE" || !model->contains("vocab") || !(*model)["vocab"].is_object())
    throw std::invalid_argument(source + ": field 'model' must be a BPE model with a vocab object");
  const std::string pre = pre_tokenizer_name(j.value("pre_tokenizer", json()), source);
  // Tokens by id: the vocabulary, then the added tokens (control when special).
  std::map<int64_t, std::pair<std::string, int>> by_id;
  for (const auto& [text, id] : (*model)["vocab"].items())
    by_id[id.get<int64_t>()] = {text, static_cast<int>(SentencePieceModel::kNormal)};
  for (const auto& a : j.value("added_tokens", json::array()))
    by_id[a.at("id").get<int64_t>()] = {a.at("content").get<std::string>(),
                                        a.value("special", false) ? SentencePieceModel::kControl
                                                                  : SentencePieceModel::kUserDefined};
  json tokens = json::array(), types = json::array();
  for (const auto& [id, entry] : by_id) {
    if (id < 0 || id >= rows)
      throw std::invalid_argument(fmt::format("{}: token id {} is outside the model's {} embedding rows", source, id, rows));
    while (static_cast<int64_t>(tokens.size()) < id) {  // a gap in the ids: a placeholder keeps them in place
      tokens.push_back(fmt::format("[PAD{}]", tokens.size()));
      types.push_back(static_cast<int>(SentencePieceModel::kUnused));
    }
    tokens.push_back(entry.first);
    types.push_back(entry.second);
  }
  pad_tokens(tokens, types, nullptr, rows, source);
  json merges = json::array();  // "a b", whichever of the two forms tokenizer.json uses
  for (const auto& m : model->value("merges", json::array()))
    merges.push_back(m.is_array() ? m.at(0).get<std::string>() + " " + m.at(1).get<std::string>() : m.get<std::string>());
  GgufTokenizer t;
  auto& k = t.keys;
  k.emplace_back("tokenizer.ggml.model", GgufValue::string("gpt2"));
  k.emplace_back("tokenizer.ggml.pre", GgufValue::string(pre));
  k.emplace_back("tokenizer.ggml.tokens", GgufValue::array(GgufValueType::kString, tokens));
  k.emplace_back("tokenizer.ggml.token_type", GgufValue::array(GgufValueType::kInt32, types));
  k.emplace_back("tokenizer.ggml.merges", GgufValue::array(GgufValueType::kString, merges));
  if (bos >= 0) k.emplace_back("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(bos)));
  if (eos >= 0) k.emplace_back("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(eos)));
  k.emplace_back("tokenizer.ggml.add_bos_token", GgufValue::boolean(add_bos));
  return t;
}

GgufTokenizer gguf_tokenizer_of_dir(const std::filesystem::path& dir, const ModelConfig& c) {
  // tokenizer_config.json's add_bos_token, when it says; SentencePiece models
  // add BOS and byte-level ones do not unless told (Llama 3's says true).
  std::optional<bool> add_bos;
  if (const auto cfg = dir / "tokenizer_config.json"; std::filesystem::exists(cfg)) {
    const json j = parse_json(read_text_file(cfg), cfg.string());
    if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) add_bos = j["add_bos_token"].get<bool>();
  }
  if (const auto spm = dir / "tokenizer.model"; std::filesystem::exists(spm))
    return gguf_tokenizer(SentencePieceModel::parse(read_text_file(spm), spm.string()), c.vocab_size, add_bos.value_or(true));
  const auto hf = dir / "tokenizer.json";
  if (!std::filesystem::exists(hf))
    throw std::invalid_argument("export-gguf: " + dir.string() + " has neither tokenizer.model nor tokenizer.json");
  return gguf_tokenizer_from_json(parse_json(read_text_file(hf), hf.string()), hf.string(), c.vocab_size, c.bos_token_id,
                                  c.eos_token_id, add_bos.value_or(false));
}

}  // namespace lococo
