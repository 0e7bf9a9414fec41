// Hugging Face `tokenizer.json` tokenizers of the BPE kind, in two flavours:
//
//   byte-level BPE (GPT-2, Llama 3, Qwen2): the text is split into pieces by the
//     pre-tokenizer's regular expression (PCRE2, Unicode properties; GPT-2's
//     pattern when the ByteLevel pre-tokenizer asks for its built-in one), each
//     piece's UTF-8 bytes become printable characters (GPT-2's byte-to-unicode
//     table: the printable Latin-1 bytes stand for themselves, the others for
//     U+0100 upwards, so " " is "Ġ"), and the characters are merged by rank.
//   SentencePiece-style BPE (Llama 2, TinyLlama, Mistral): spaces become U+2581
//     ("▁") and one is put in front (normalizer Prepend + Replace, or the
//     Metaspace pre-tokenizer), characters are merged by rank, and characters
//     outside the vocabulary become <0xAB> byte tokens (byte_fallback).
//
// Merging: repeatedly join the adjacent pair with the lowest merge rank (its
// index in model.merges) until no pair has one. Llama 3's `ignore_merges` takes
// a piece found whole in the vocabulary as it is.
// Added tokens (tokenizer.json `added_tokens`, special or not) are matched in
// the raw text first, longest first, and never take part in merges.
// The NFC normalizer (Qwen2) composes the ordinary text between added tokens
// (ICU). Other normalizers and pre-tokenizers are refused.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "lococo/tokenizer/tokenizer.h"

namespace lococo {

class HfBpeTokenizer final : public Tokenizer {
 public:
  // Throws std::runtime_error naming the file (`source`) and field on bad input.
  // bos_id / eos_id: -1 = take them from added tokens with the usual names.
  static std::unique_ptr<HfBpeTokenizer> load(const std::filesystem::path& tokenizer_json, int64_t bos_id = -1,
                                              int64_t eos_id = -1);
  HfBpeTokenizer(const nlohmann::json& j, const std::string& source, int64_t bos_id = -1, int64_t eos_id = -1);
  ~HfBpeTokenizer() override;

  std::vector<int64_t> encode(const std::string& text, bool add_bos = false) const override;
  std::vector<int64_t> encode_text(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string piece_text(int64_t id) const override;
  int64_t special_token_id(const std::string& text) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  int64_t bos_id() const override { return bos_; }
  int64_t eos_id() const override { return eos_; }
  bool byte_level() const { return byte_level_; }

 private:
  void encode_ordinary(const std::string& text, std::vector<int64_t>& out) const;  // no added tokens inside
  void encode_word(const std::string& word, std::vector<int64_t>& out) const;      // one pre-tokenized piece
  std::vector<std::pair<size_t, size_t>> bpe_merge(const std::string& word) const;  // its symbols (begin, size)
  std::string token_bytes(int64_t id) const;  // the text an id stands for (before any leading-space strip)

  std::string source_;
  bool byte_level_ = false;       // else SentencePiece-style
  bool prepend_space_ = false;    // SentencePiece-style: "▁" put in front of the text
  bool nfc_ = false;              // normalizer NFC: text composed before anything else
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  bool split_spm_words_ = true;   // no merge joins a symbol to a following "▁": words can be merged alone
  int64_t unk_ = -1, bos_ = -1, eos_ = -1;
  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int64_t> merge_rank_;  // "left right" -> rank
  std::vector<std::pair<std::string, int64_t>> added_;    // content -> id, longest first
  std::vector<bool> is_added_;                             // by id
  struct Regex;                                            // compiled PCRE2 pattern
  std::unique_ptr<Regex> split_;                           // byte-level pre-tokenizer
};

}  // namespace lococo
