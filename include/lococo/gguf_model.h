// Llama-family models in GGUF files (the format is described in gguf.h):
// llama.cpp's metadata keys and tensor names <-> our config, weights and
// SentencePiece tokenizer.
//
// Architectures: "llama" (Llama 2, TinyLlama, Mistral) and "qwen2" (q/k/v biases).
// llama.cpp's converter stores the rows of the "llama" Q and K projections
// permuted for its RoPE layout (within each head, the two halves of the head
// dimension interleaved); reading undoes it and writing applies it, so logits
// match the Hugging Face model. "qwen2" files keep the Hugging Face order.
#pragma once

#include <filesystem>
#include <string>

#include "lococo/config.h"
#include "lococo/gguf.h"
#include "lococo/model_dir.h"
#include "lococo/sentencepiece_model.h"

namespace lococo {

// llama.cpp's tensor name for a Hugging Face one ("model.layers.3.mlp.up_proj.weight"
// -> "blk.3.ffn_up.weight"); throws std::invalid_argument for names it has none for.
std::string gguf_tensor_name(const std::string& hf_name);

// Throws std::runtime_error naming the file and the metadata key on bad input.
ModelConfig config_from_gguf(const GgufFile& file);
// The tokenizer (tokenizer.ggml.model "llama") as a SentencePiece BPE model.
SentencePieceModel tokenizer_from_gguf(const GgufFile& file);
// The tokenizer of any supported kind: "llama" (SentencePiece) or "gpt2"
// (byte-level BPE with tokenizer.ggml.merges; the pre-tokenizer regex chosen by
// tokenizer.ggml.pre: "default"/"gpt-2", "llama-bpe" (Llama 3), "qwen2").
std::shared_ptr<Tokenizer> load_gguf_tokenizer(const GgufFile& file);

// Config, weights (dequantised, converted to options.dtype) and tokenizer of a GGUF file.
LoadedModel load_gguf_model(const std::filesystem::path& file, const ModelOptions& options = {});

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

// `lococo export-gguf`: writes `model` as a GGUF v3 file llama.cpp loads
// (complete metadata, the tokenizer), 2-D weights as `type` (norms and biases
// stay F32), llama3 RoPE scaling as rope_freqs.weight, atomically.
void export_gguf(const LlamaModel& model, const GgufTokenizer& tokenizer, const std::filesystem::path& out,
                 GgmlType type, const std::string& name);
// The same with a SentencePiece tokenizer (adds BOS).
void export_gguf(const LlamaModel& model, const SentencePieceModel& tokenizer, const std::filesystem::path& out,
                 GgmlType type, const std::string& name);

}  // namespace lococo
