// Tokenizers as GGUF metadata (tokenizer.ggml.*, as llama.cpp writes them):
// read into our tokenizers, and our tokenizers written as such keys.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "lococo/core/config.h"
#include "lococo/io/gguf.h"
#include "lococo/tokenizer/sentencepiece_model.h"
#include "lococo/tokenizer/tokenizer.h"

namespace lococo {

// The tokenizer (tokenizer.ggml.model "llama") as a SentencePiece BPE model.
SentencePieceModel tokenizer_from_gguf(const GgufFile& file);
// The tokenizer of any supported kind: "llama" (SentencePiece) or "gpt2"
// (byte-level BPE with tokenizer.ggml.merges; the pre-tokenizer regex chosen by
// tokenizer.ggml.pre: "default"/"gpt-2", "llama-bpe" (Llama 3), "qwen2").
std::shared_ptr<Tokenizer> load_gguf_tokenizer(const GgufFile& file);

// A tokenizer as llama.cpp's tokenizer.ggml.* metadata, its tokens padded
// with unused placeholders to the model's `rows` embedding rows.
struct GgufTokenizer {
  std::vector<std::pair<std::string, GgufValue>> keys;
};
// SentencePiece: tokenizer.ggml.model "llama" (tokens, scores, types, ids).
GgufTokenizer gguf_tokenizer(const SentencePieceModel& tokenizer, int64_t rows, bool add_bos);
// A byte-level BPE tokenizer.json: "gpt2" with merges and the pre-tokenizer's
// name ("gpt-2", "llama-bpe", "qwen2"); added tokens are control tokens when
// special. Throws std::invalid_argument naming `source` for anything else
// (SentencePiece-style tokenizer.json included: export its tokenizer.model).
GgufTokenizer gguf_tokenizer_from_json(const nlohmann::json& tokenizer_json, const std::string& source, int64_t rows,
                                       int64_t bos, int64_t eos, bool add_bos);
// A model directory's tokenizer: tokenizer.model, else tokenizer.json;
// add_bos_token from tokenizer_config.json when it is there.
GgufTokenizer gguf_tokenizer_of_dir(const std::filesystem::path& dir, const ModelConfig& config);

}  // namespace lococo
