// A model directory: config.json + weights (model.safetensors or shards) +
// tokenizer.model. Loading, saving and making a random one.
#pragma once

#include <filesystem>
#include <memory>

#include "lococo/model/model.h"
#include "lococo/tokenizer/tokenizer.h"

namespace lococo {

struct LoadedModel {
  std::shared_ptr<const LlamaModel> model;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::filesystem::path dir;  // the model directory, or the GGUF file
  std::string format;         // "safetensors" or "GGUF v3"
};

// A model directory, or a GGUF file (see lococo/model/gguf_llama.h). Throws
// std::runtime_error naming the file and field/tensor on bad input; also
// checks that the tokenizer fits the model's vocabulary.
LoadedModel load_model_dir(const std::filesystem::path& dir, const ModelOptions& options = {});

// Writes config.json and model.safetensors (atomically each) into `dir`.
void save_model_dir(const std::filesystem::path& dir, const LlamaModel& model);

// `lococo init-model`: random weights (seeded) and a SentencePiece tokenizer
// trained on `tokenizer_text` lines (a built-in English sample when empty).
// The tokenizer's vocabulary is capped at config.vocab_size.
void init_model_dir(const std::filesystem::path& dir, const ModelConfig& config, uint64_t seed,
                    const std::vector<std::string>& tokenizer_text = {});

// A few paragraphs of plain English, for tokenizers of random test models.
const std::vector<std::string>& builtin_sample_text();

// The directory commands use when --model is omitted (the bundled model).
std::filesystem::path default_model_dir();

}  // namespace lococo
