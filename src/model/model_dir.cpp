#include "lococo/model/model_dir.h"

#include <cstdlib>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/model/gguf_llama.h"

namespace lococo {

LoadedModel load_model_dir(const std::filesystem::path& dir, const ModelOptions& options) {
  if (std::filesystem::is_regular_file(dir) && dir.extension() == ".gguf") return load_gguf_model(dir, options);
  if (!std::filesystem::is_directory(dir)) throw std::runtime_error(dir.string() + ": not a model directory (nor a .gguf file)");
  ModelConfig config = ModelConfig::load(dir / "config.json");
  LlamaWeights weights = load_weights(dir, config, options);
  LoadedModel out;
  out.dir = dir;
  out.format = "safetensors";
  out.tokenizer = load_tokenizer(dir, config.bos_token_id, config.eos_token_id);
  if (out.tokenizer->vocab_size() > config.vocab_size)
    throw std::runtime_error(fmt::format("{}: tokenizer has {} tokens but config.json vocab_size is {}",
                                         tokenizer_file(dir).string(), out.tokenizer->vocab_size(),
                                         config.vocab_size));
  out.model = std::make_shared<LlamaModel>(std::move(config), std::move(weights), options);
  return out;
}

void save_model_dir(const std::filesystem::path& dir, const LlamaModel& model) {
  std::filesystem::create_directories(dir);
  model.config().save(dir / "config.json");
  save_weights(dir, model.config(), model.weights());
}

const std::vector<std::string>& builtin_sample_text() {
  static const std::vector<std::string> lines = {
      "The quick brown fox jumps over the lazy dog while the farmer watches from the gate.",
      "It was the best of times, it was the worst of times, it was the age of wisdom.",
      "Call me Ishmael. Some years ago, never mind how long precisely, having little money in my purse,",
      "and nothing particular to interest me on shore, I thought I would sail about a little.",
      "The pass key is 12345. Remember it. The grass is green. The sky is blue. The sun is yellow.",
      "Here we go. There and back again. What is the pass key? The pass key is 67890.",
      "Numbers like 0 1 2 3 4 5 6 7 8 9 appear in reports, tables, dates and addresses.",
      "Mr. Speaker, Mr. President, distinguished members of the Congress, and fellow citizens:",
      "The state of the union is strong, and the people of this nation work hard every day.",
      "She said, \"Come here!\" and he answered, 'Why?' (It was late; the lamps were lit.)",
  };
  return lines;
}

void init_model_dir(const std::filesystem::path& dir, const ModelConfig& config, uint64_t seed,
                    const std::vector<std::string>& tokenizer_text) {
  std::filesystem::create_directories(dir);
  TokenizerTrainOptions t;
  t.vocab_size = config.vocab_size;
  t.hard_vocab_limit = false;  // a small sample may not fill a large vocabulary
  train_sentencepiece(tokenizer_text.empty() ? builtin_sample_text() : tokenizer_text, dir / "tokenizer.model", t);
  LlamaModel model(config, init_weights(config, seed));
  save_model_dir(dir, model);
}

std::filesystem::path default_model_dir() {
  if (const char* env = std::getenv("LOCOCO_MODEL")) return env;
#ifdef LOCOCO_DEFAULT_MODEL_DIR
  return LOCOCO_DEFAULT_MODEL_DIR;
#else
  return "models/lococo-tiny";
#endif
}

}  // namespace lococo
