// Tokenizers: text <-> token ids. SentencePiece models (`tokenizer.model`) go
// through libsentencepiece.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace lococo {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text`, with BOS first when `add_bos`.
  virtual std::vector<int64_t> encode(const std::string& text, bool add_bos = false) const = 0;
  // Token ids of `text` as plain text: special or added tokens written in it
  // ("<|im_end|>") are encoded as their characters, never as those tokens, so
  // text from a user cannot forge a chat turn.
  virtual std::vector<int64_t> encode_text(const std::string& text) const { return encode(text); }
  // Token ids of `text` as it reads right after a line end of a longer text:
  // what tokenising the whole text gives for that part, where encode() would
  // open the text with a word-start marker (SentencePiece's dummy prefix).
  // Text cut into pieces after '\n' (core/text_pieces.h) tokenises as a whole
  // with encode(first piece) and this for the rest.
  std::vector<int64_t> encode_after_line_end(const std::string& text) const;
  // The id of the special (control or added) token written `text`, or -1.
  virtual int64_t special_token_id(const std::string& /*text*/) const { return -1; }
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // The text of one token as it continues a stream (leading spaces kept).
  virtual std::string piece_text(int64_t id) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;
  virtual int64_t eos_id() const = 0;
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& model_file);
  // A model given as the bytes of a tokenizer.model; `source` names it in errors.
  SentencePieceTokenizer(const std::string& model_proto, const std::string& source);
  ~SentencePieceTokenizer() override;
  std::vector<int64_t> encode(const std::string& text, bool add_bos = false) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  std::string piece_text(int64_t id) const override;
  int64_t special_token_id(const std::string& text) const override;
  int64_t vocab_size() const override;
  int64_t bos_id() const override;
  int64_t eos_id() const override;

 private:
  void* sp_ = nullptr;  // a sentencepiece::SentencePieceProcessor inside liblococo_spm.so
  std::unordered_map<std::string, int64_t> controls_;  // control pieces by their text (SentencePiece never encodes them)
  std::string source_;  // the file (or other origin) named in errors
  int64_t size_ = 0, bos_ = -1, eos_ = -1;
};

// Options of SentencePiece training (`lococo train-tokenizer`, `init-model`).
struct TokenizerTrainOptions {
  int64_t vocab_size = 4096;         // pieces including <unk>, <s>, </s> and 256 byte pieces
  std::string model_type = "bpe";    // "bpe" | "unigram"
  double character_coverage = 1.0;   // share of characters covered by pieces
  int64_t max_sentences = 2000000;   // sentences sampled for training
  bool hard_vocab_limit = true;      // false: allow a smaller vocabulary on tiny corpora
  // Whitespace as written: identity normalisation, no removal of repeated or
  // leading spaces, newlines through byte pieces (Llama's own setting; what
  // llama.cpp assumes of a GGUF vocabulary). Off: SentencePiece's default NFKC
  // with extra whitespace removed, which folds newlines into spaces.
  bool keep_whitespace = false;
};

// Trains a SentencePiece model (byte fallback, ids unk=0 bos=1 eos=2) on
// `lines` and writes it atomically to `out`.
void train_sentencepiece(const std::vector<std::string>& lines, const std::filesystem::path& out,
                         const TokenizerTrainOptions& options);

// Loads the tokenizer of a model directory: tokenizer.model (SentencePiece), else
// tokenizer.json (Hugging Face BPE, tokenizer_json.h; BOS/EOS ids from the config,
// -1 = by their usual names).
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir, int64_t bos_id = -1,
                                          int64_t eos_id = -1);
// The file load_tokenizer reads in `model_dir` (tokenizer.model, else
// tokenizer.json); std::runtime_error when there is neither.
std::filesystem::path tokenizer_file(const std::filesystem::path& model_dir);

}  // namespace lococo
