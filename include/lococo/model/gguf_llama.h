// Llama-family models in GGUF files (the format is described in gguf.h):
// llama.cpp's metadata keys and tensor names <-> our config and weights (the
// tokenizer's keys: lococo/tokenizer/gguf_vocab.h).
//
// Architectures: "llama" (Llama 2, TinyLlama, Mistral) and "qwen2" (q/k/v biases).
// llama.cpp's converter stores the rows of the "llama" Q and K projections
// permuted for its RoPE layout (within each head, the two halves of the head
// dimension interleaved); reading undoes it and writing applies it, so logits
// match the Hugging Face model. "qwen2" files keep the Hugging Face order.
#pragma once

#include <filesystem>
#include <string>

#include "lococo/core/config.h"
#include "lococo/io/gguf.h"
#include "lococo/model/model_dir.h"
#include "lococo/tokenizer/gguf_vocab.h"
#include "lococo/tokenizer/sentencepiece_model.h"

namespace lococo {

// llama.cpp's tensor name for a Hugging Face one ("model.layers.3.mlp.up_proj.weight"
// -> "blk.3.ffn_up.weight"); throws std::invalid_argument for names it has none for.
std::string gguf_tensor_name(const std::string& hf_name);

// Throws std::runtime_error naming the file and the metadata key on bad input.
ModelConfig config_from_gguf(const GgufFile& file);
// Config, weights (dequantised, converted to options.dtype) and tokenizer of a GGUF file.
LoadedModel load_gguf_model(const std::filesystem::path& file, const ModelOptions& options = {});

// `lococo export-gguf`: writes `model` as a GGUF v3 file llama.cpp loads
// (complete metadata, the tokenizer), 2-D weights as `type` (norms and biases
// stay F32), llama3 RoPE scaling as rope_freqs.weight, atomically.
void export_gguf(const LlamaModel& model, const GgufTokenizer& tokenizer, const std::filesystem::path& out,
                 GgmlType type, const std::string& name);
// The same with a SentencePiece tokenizer (adds BOS).
void export_gguf(const LlamaModel& model, const SentencePieceModel& tokenizer, const std::filesystem::path& out,
                 GgmlType type, const std::string& name);

}  // namespace lococo
