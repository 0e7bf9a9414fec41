#include "lococo/tokenizer/tokenizer_json.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <climits>
#include <stdexcept>

#include <queue>

#include <fmt/format.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#include <nlohmann/json.hpp>

#include "lococo/core/io_util.h"

namespace lococo {
namespace {

using nlohmann::json;

const std::string kMetaspace = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space
// GPT-2's pre-tokenizer pattern: what ByteLevel with use_regex means.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---- UTF-8 ------------------------------------------------------------------------

size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;  // a stray continuation byte stands alone
}

std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::min(utf8_length(static_cast<unsigned char>(s[i])), s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string utf8_encode(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// ---- GPT-2's byte <-> printable character table --------------------------------------

struct ByteTable {
  std::string to_char[256];                         // byte -> UTF-8 of its stand-in character
  std::unordered_map<std::string, uint8_t> to_byte;  // and back
  ByteTable() {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_char[b] = utf8_encode(printable ? b : next++);
      to_byte[to_char[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteTable& byte_table() {
  static const ByteTable t;
  return t;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) s.replace(pos, from.size(), to);
  return s;
}

std::string type_of(const json& j) { return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : ""; }

// Unicode normalization form C, through ICU (Debian's Unicode library: the
// composition tables are nothing to write by hand). Text that is already NFC,
// or is not valid UTF-8 (ICU would replace the bad bytes), comes back as it is.
std::string nfc(const std::string& text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) throw std::runtime_error(std::string("ICU: no NFC normalizer: ") + u_errorName(status));
  const icu::UnicodeString in = icu::UnicodeString::fromUTF8(text);
  if (normalizer->isNormalized(in, status) || U_FAILURE(status)) return text;
  std::string back;
  if (in.toUTF8String(back) != text) return text;  // not valid UTF-8
  const icu::UnicodeString composed = normalizer->normalize(in, status);
  if (U_FAILURE(status)) return text;
  std::string out;
  return composed.toUTF8String(out);
}

// Flattens a "Sequence" (of normalizers, pre-tokenizers or decoders) into its parts.
std::vector<json> parts_of(const json& j, const char* list_key) {
  if (j.is_null()) return {};
  if (type_of(j) == "Sequence" && j.contains(list_key) && j[list_key].is_array()) return j[list_key].get<std::vector<json>>();
  return {j};
}

}  // namespace

// ---- The compiled pre-tokenizer pattern ---------------------------------------------

struct HfBpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  Regex(const std::string& pattern, const std::string& source) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &error,
                         &offset, nullptr);
    if (!code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      throw std::runtime_error(fmt::format("{}: pre_tokenizer regex: {} at offset {}", source,
                                           reinterpret_cast<const char*>(message), offset));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // faster when available; the interpreter otherwise
  }
  ~Regex() { pcre2_code_free(code); }

  // Split "Isolated": every match is a piece, and so is every stretch between
  // matches. The subject's UTF-8 is checked once, on the first match; later
  // matches skip the check (PCRE2 would otherwise check from the offset to the
  // end on every call: quadratic in the text).
  std::vector<std::string> split(const std::string& text) const {
    std::vector<std::string> pieces;
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
    size_t gap = 0, from = 0;
    uint32_t check = 0;
    while (from < text.size()) {
      const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), from, check, md.get(),
                                 nullptr);
      check = PCRE2_NO_UTF_CHECK;
      if (rc == PCRE2_ERROR_NOMATCH) break;  // the rest is the last stretch
      if (rc < 0) fail(rc, md.get());
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      if (ov[1] == ov[0]) {  // empty match: look again one character on
        from = ov[0] + utf8_length(static_cast<unsigned char>(text[ov[0]]));
        continue;
      }
      if (ov[0] > gap) pieces.push_back(text.substr(gap, ov[0] - gap));
      pieces.push_back(text.substr(ov[0], ov[1] - ov[0]));
      gap = from = ov[1];
    }
    if (gap < text.size()) pieces.push_back(text.substr(gap));
    return pieces;
  }

  [[noreturn]] static void fail(int rc, pcre2_match_data* md) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof(message));
    const auto* what = reinterpret_cast<const char*>(message);
    if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21)
      throw std::invalid_argument(fmt::format("text is not valid UTF-8 at byte {}: {}", pcre2_get_startchar(md), what));
    throw std::runtime_error(fmt::format("pre_tokenizer regex failed: {}", what));
  }
};

// ---- Loading -------------------------------------------------------------------------

std::unique_ptr<HfBpeTokenizer> HfBpeTokenizer::load(const std::filesystem::path& file, int64_t bos_id, int64_t eos_id) {
  return std::make_unique<HfBpeTokenizer>(parse_json(read_text_file(file), file.string()), file.string(), bos_id, eos_id);
}

HfBpeTokenizer::HfBpeTokenizer(const json& j, const std::string& source, int64_t bos_id, int64_t eos_id)
    : source_(source) {
  auto fail = [&](const std::string& what) { throw std::runtime_error(source + ": " + what); };
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail("missing object 'model'");
  const json& model = j["model"];
  if (type_of(model) != "BPE") fail(fmt::format("model.type '{}' is not supported (BPE)", type_of(model)));
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("model.vocab must be an object");
  if (!model.contains("merges") || !model["merges"].is_array()) fail("model.merges must be an array");

  // Vocabulary and added tokens; ids may leave holes.
  auto put = [&](const std::string& token, const json& id, const std::string& field) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (int64_t{1} << 24))
      fail(fmt::format("{}: id of '{}' is not a valid token id", field, token));
    const auto i = id.get<int64_t>();
    if (i >= static_cast<int64_t>(id_to_token_.size())) {
      id_to_token_.resize(i + 1);
      is_added_.resize(i + 1, false);
    }
    id_to_token_[i] = token;
    vocab_[token] = i;
  };
  for (const auto& [token, id] : model["vocab"].items()) put(token, id, "model.vocab");
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id"))
        fail("added_tokens entries need 'id' and 'content'");
      const std::string content = a["content"].get<std::string>();
      put(content, a["id"], "added_tokens");
      is_added_[a["id"].get<int64_t>()] = true;
      added_.emplace_back(content, a["id"].get<int64_t>());
    }
  }
  std::stable_sort(added_.begin(), added_.end(), [](auto& a, auto& b) { return a.first.size() > b.first.size(); });

  // Merges: "left right" strings, or [left, right] pairs in newer files.
  for (size_t r = 0; r < model["merges"].size(); ++r) {
    const json& m = model["merges"][r];
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos) fail(fmt::format("model.merges[{}] '{}' is not two tokens", r, s));
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      fail(fmt::format("model.merges[{}] is neither \"a b\" nor [a, b]", r));
    }
    merge_rank_.emplace(left + " " + right, static_cast<int64_t>(r));
    // A merge that joins something to a following "▁" would cross SentencePiece words.
    if (right.rfind(kMetaspace, 0) == 0 && left.find_first_not_of(kMetaspace) != std::string::npos) split_spm_words_ = false;
  }
  byte_fallback_ = model.value("byte_fallback", false);
  ignore_merges_ = model.value("ignore_merges", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = vocab_.find(model["unk_token"].get<std::string>());
    if (it != vocab_.end()) unk_ = it->second;
  }

  // Normalizer and pre-tokenizer decide the flavour.
  for (const json& n : parts_of(j.value("normalizer", json()), "normalizers")) {
    const std::string t = type_of(n);
    if (t == "Prepend" && n.value("prepend", "") == kMetaspace) {
      prepend_space_ = true;
    } else if (t == "Replace" && n.contains("pattern") && n["pattern"].value("String", "") == " " &&
               n.value("content", "") == kMetaspace) {
      // spaces -> "▁": what SentencePiece-style encoding does anyway
    } else if (t == "NFC") {
      nfc_ = true;
    } else {
      fail(fmt::format("normalizer '{}' is not supported (Prepend/Replace of \"▁\", NFC)", t));
    }
  }
  for (const json& p : parts_of(j.value("pre_tokenizer", json()), "pretokenizers")) {
    const std::string t = type_of(p);
    if (t == "ByteLevel") {
      byte_level_ = true;
      if (p.value("add_prefix_space", false)) fail("pre_tokenizer ByteLevel with add_prefix_space is not supported");
      if (p.value("use_regex", true)) split_ = std::make_unique<Regex>(kGpt2Pattern, source);
    } else if (t == "Split" && p.contains("pattern") && p["pattern"].contains("Regex") &&
               p.value("behavior", "") == "Isolated" && !p.value("invert", false)) {
      split_ = std::make_unique<Regex>(p["pattern"]["Regex"].get<std::string>(), source);
    } else if (t == "Metaspace") {
      prepend_space_ = p.value("prepend_scheme", std::string(p.value("add_prefix_space", true) ? "always" : "never")) != "never";
    } else {
      fail(fmt::format("pre_tokenizer '{}' is not supported (ByteLevel, Split Isolated, Metaspace)", t));
    }
  }
  if (!byte_level_ && split_) fail("a Split pre-tokenizer without ByteLevel is not supported");
  if (byte_level_ && prepend_space_) fail("byte-level and SentencePiece-style settings are mixed");

  auto named = [&](std::initializer_list<const char*> names) -> int64_t {
    for (const char* n : names)
      if (auto it = vocab_.find(n); it != vocab_.end()) return it->second;
    return -1;
  };
  bos_ = bos_id >= 0 ? bos_id : named({"<s>", "<|begin_of_text|>"});
  eos_ = eos_id >= 0 ? eos_id : named({"</s>", "<|end_of_text|>", "<|endoftext|>"});
}

HfBpeTokenizer::~HfBpeTokenizer() = default;

// ---- Encoding ---------------------------------------------------------------------

std::vector<int64_t> HfBpeTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int64_t> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  // Added tokens first: at each position the longest one that starts there.
  size_t ordinary = 0;
  for (size_t i = 0; i < text.size();) {
    const std::pair<std::string, int64_t>* hit = nullptr;
    for (const auto& a : added_)
      if (!a.first.empty() && text.compare(i, a.first.size(), a.first) == 0) {
        hit = &a;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > ordinary) encode_ordinary(text.substr(ordinary, i - ordinary), out);
    out.push_back(hit->second);
    i += hit->first.size();
    ordinary = i;
  }
  if (ordinary < text.size()) encode_ordinary(text.substr(ordinary), out);
  return out;
}

std::vector<int64_t> HfBpeTokenizer::encode_text(const std::string& text) const {
  std::vector<int64_t> out;
  if (!text.empty()) encode_ordinary(text, out);
  return out;
}

int64_t HfBpeTokenizer::special_token_id(const std::string& text) const {
  for (const auto& [content, id] : added_)
    if (content == text) return id;
  return -1;
}

void HfBpeTokenizer::encode_ordinary(const std::string& raw, std::vector<int64_t>& out) const {
  const std::string text = nfc_ ? nfc(raw) : raw;
  if (byte_level_) {
    for (const std::string& piece : split_ ? split_->split(text) : std::vector<std::string>{text}) {
      std::string mapped;
      for (unsigned char b : piece) mapped += byte_table().to_char[b];
      encode_word(mapped, out);
    }
    return;
  }
  const std::string s = (prepend_space_ ? kMetaspace : "") + replace_all(text, " ", kMetaspace);
  if (!split_spm_words_) return encode_word(s, out);
  // Words: a new one starts at each "▁" that follows another character.
  size_t start = 0;
  for (size_t i = 0; i < s.size(); i += utf8_length(static_cast<unsigned char>(s[i]))) {
    if (i > start && s.compare(i, kMetaspace.size(), kMetaspace) == 0 && s.compare(i - kMetaspace.size(), kMetaspace.size(), kMetaspace) != 0) {
      encode_word(s.substr(start, i - start), out);
      start = i;
    }
  }
  if (start < s.size()) encode_word(s.substr(start), out);
}

// Joins the lowest-ranked adjacent pair of symbols (the leftmost first) until
// no pair has a rank; returns the symbols as (begin, size) bytes of `word`.
// A heap of candidate pairs over a linked list of symbols: O(n log n) in the
// word's length, where rescanning the word after each merge was quadratic (a
// pre-token can be a whole file without a space). A heap entry is stale when
// either symbol has grown or gone since it was pushed (sizes only grow).
std::vector<std::pair<size_t, size_t>> HfBpeTokenizer::bpe_merge(const std::string& word) const {
  struct Symbol {
    size_t begin, size;  // bytes of `word`; size 0 once merged into its left neighbour
    int prev, next;      // neighbours, -1 at the ends
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(utf8_length(static_cast<unsigned char>(word[i])), word.size() - i);
    const int at = static_cast<int>(sym.size());
    sym.push_back({i, n, at - 1, at + 1});
    i += n;
  }
  if (sym.empty()) return {};
  sym.back().next = -1;
  struct Pair {
    int64_t rank;
    int left;
    size_t left_size, right_size;
  };
  const auto later = [](const Pair& a, const Pair& b) { return a.rank != b.rank ? a.rank > b.rank : a.left > b.left; };
  std::priority_queue<Pair, std::vector<Pair>, decltype(later)> heap(later);
  std::string key;
  const auto push = [&](int left) {
    if (left < 0 || sym[left].next < 0) return;
    const Symbol &l = sym[left], &r = sym[l.next];
    key.assign(word, l.begin, l.size).append(" ").append(word, r.begin, r.size);
    if (const auto it = merge_rank_.find(key); it != merge_rank_.end()) heap.push({it->second, left, l.size, r.size});
  };
  for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) push(i);
  while (!heap.empty()) {
    const Pair p = heap.top();
    heap.pop();
    Symbol& l = sym[p.left];
    if (l.size != p.left_size || l.next < 0 || sym[l.next].size != p.right_size) continue;  // stale
    Symbol& r = sym[l.next];
    l.size += r.size;
    r.size = 0;
    l.next = r.next;
    if (l.next >= 0) sym[l.next].prev = p.left;
    push(l.prev);
    push(p.left);
  }
  std::vector<std::pair<size_t, size_t>> out;
  for (int i = 0; i >= 0; i = sym[i].next) out.emplace_back(sym[i].begin, sym[i].size);
  return out;
}

void HfBpeTokenizer::encode_word(const std::string& word, std::vector<int64_t>& out) const {
  if (ignore_merges_)
    if (auto it = vocab_.find(word); it != vocab_.end()) return out.push_back(it->second);
  std::vector<std::string> symbols;
  for (const auto& [begin, size] : bpe_merge(word)) symbols.push_back(word.substr(begin, size));
  for (const std::string& s : symbols) {
    if (auto it = vocab_.find(s); it != vocab_.end()) {
      out.push_back(it->second);
    } else if (byte_fallback_) {
      for (unsigned char b : s) {
        auto byte = vocab_.find(fmt::format("<0x{:02X}>", b));
        if (byte == vocab_.end()) throw std::runtime_error(fmt::format("{}: byte token <0x{:02X}> is missing", source_, b));
        out.push_back(byte->second);
      }
    } else if (unk_ >= 0) {
      out.push_back(unk_);
    } else {
      throw std::runtime_error(fmt::format("{}: '{}' is not in the vocabulary and there is no unk_token", source_, s));
    }
  }
}

// ---- Decoding ---------------------------------------------------------------------

std::string HfBpeTokenizer::token_bytes(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  const std::string& token = id_to_token_[id];
  if (is_added_[id]) return token;
  if (byte_level_) {
    std::string out;
    for (const std::string& ch : utf8_chars(token)) {
      auto it = byte_table().to_byte.find(ch);
      out += it != byte_table().to_byte.end() ? std::string(1, static_cast<char>(it->second)) : ch;
    }
    return out;
  }
  if (byte_fallback_ && token.size() == 6 && token.rfind("<0x", 0) == 0 && token.back() == '>')
    return std::string(1, static_cast<char>(std::stoi(token.substr(3, 2), nullptr, 16)));
  return replace_all(token, kMetaspace, " ");
}

std::string HfBpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  bool at_segment_start = true;  // where the encoder put its "▁"
  for (int64_t id : ids) {
    if (id == bos_ && id >= 0) continue;
    std::string piece = token_bytes(id);
    if (prepend_space_ && at_segment_start && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    at_segment_start = id >= 0 && id < vocab_size() && is_added_[id];
    out += piece;
  }
  return out;
}

std::string HfBpeTokenizer::piece_text(int64_t id) const { return token_bytes(id); }

}  // namespace lococo
