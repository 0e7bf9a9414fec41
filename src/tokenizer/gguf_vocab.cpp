// Tokenizers in GGUF metadata (tokenizer.ggml.*), read and written.
#include "lococo/tokenizer/gguf_vocab.h"

#include <stdexcept>

#include <fmt/format.h>

#include "lococo/core/io_util.h"
#include "lococo/tokenizer/tokenizer_json.h"

namespace lococo {
namespace {

using nlohmann::json;

// The pre-tokenizer patterns of the models llama.cpp names in tokenizer.ggml.pre.
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace

SentencePieceModel tokenizer_from_gguf(const GgufFile& f) {
  const std::string file = f.path().string();
  const std::string kind = f.text("tokenizer.ggml.model", "");
  if (kind != "llama")
    throw std::runtime_error(fmt::format("{}: tokenizer.ggml.model '{}' is not supported (llama: SentencePiece)", file, kind));
  const json& tokens = f.array("tokenizer.ggml.tokens", GgufValueType::kString, 0);
  const json* scores = f.has("tokenizer.ggml.scores")
                           ? &f.array("tokenizer.ggml.scores", GgufValueType::kFloat32, tokens.size()) : nullptr;
  const json* types = f.has("tokenizer.ggml.token_type")
                          ? &f.array("tokenizer.ggml.token_type", GgufValueType::kInt32, tokens.size()) : nullptr;
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
    const int64_t v = f.count(key, fallback);
    if (v >= n) throw std::runtime_error(fmt::format("{}: {} = {} is beyond the {} tokens", file, key, v, n));
    return static_cast<int>(v);
  };
  m.unk_id = id("tokenizer.ggml.unknown_token_id", 0);
  m.bos_id = id("tokenizer.ggml.bos_token_id", 1);
  m.eos_id = id("tokenizer.ggml.eos_token_id", 2);
  m.pad_id = f.has("tokenizer.ggml.padding_token_id") ? id("tokenizer.ggml.padding_token_id", 0) : -1;
  if (m.pad_id == m.unk_id || m.pad_id == m.bos_id || m.pad_id == m.eos_id) m.pad_id = -1;
  m.add_dummy_prefix = f.flag("tokenizer.ggml.add_space_prefix", true);
  m.remove_extra_whitespaces = f.flag("tokenizer.ggml.remove_extra_whitespaces", false);
  if (f.has("tokenizer.ggml.precompiled_charsmap")) {
    for (const auto& b : f.array("tokenizer.ggml.precompiled_charsmap", GgufValueType::kUint8, 0))
      m.precompiled_charsmap.push_back(static_cast<char>(b.get<uint8_t>()));
    m.normalizer_name = "precompiled";
  }
  return m;
}

std::shared_ptr<Tokenizer> load_gguf_tokenizer(const GgufFile& f) {
  const std::string file = f.path().string();
  const std::string kind = f.text("tokenizer.ggml.model", "");
  if (kind == "llama") return std::make_shared<SentencePieceTokenizer>(tokenizer_from_gguf(f).serialize(), file + " (tokenizer)");
  if (kind != "gpt2")
    throw std::runtime_error(fmt::format("{}: tokenizer.ggml.model '{}' is not supported (llama, gpt2)", file, kind));
  // Byte-level BPE: the same thing a tokenizer.json describes, so build one.
  const json& tokens = f.array("tokenizer.ggml.tokens", GgufValueType::kString, 0);
  const json& merges = f.array("tokenizer.ggml.merges", GgufValueType::kString, 0);
  const json* types = f.has("tokenizer.ggml.token_type")
                          ? &f.array("tokenizer.ggml.token_type", GgufValueType::kInt32, tokens.size()) : nullptr;
  const std::string pre = f.text("tokenizer.ggml.pre", "default");
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
  const int64_t bos = f.has("tokenizer.ggml.bos_token_id") ? f.count("tokenizer.ggml.bos_token_id") : -1;
  const int64_t eos = f.has("tokenizer.ggml.eos_token_id") ? f.count("tokenizer.ggml.eos_token_id") : -1;
  return std::make_shared<HfBpeTokenizer>(j, file + " (tokenizer)", bos, eos);
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
