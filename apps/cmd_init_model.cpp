// lococo init-model: a randomly initialised model directory, for tests and experiments.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "commands.h"
#include "lococo/core/io_util.h"

namespace lococo::cli {
namespace {

// A small default shape, so `lococo init-model --out DIR` works with no config.
const char* kDefaultConfig = R"({
  "architectures": ["LlamaForCausalLM"], "vocab_size": 512, "hidden_size": 64,
  "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5,
  "rope_theta": 10000.0, "tie_word_embeddings": false
})";

}  // namespace

void add_init_model_command(CLI::App& root) {
  struct Flags {
    std::string config, out, text;
    uint64_t seed = 0;
  };
  auto f = std::make_shared<Flags>();
  auto* sub = root.add_subcommand("init-model", "Create a model directory with random weights and a tokenizer");
  sub->add_option("--config", f->config, "HF-style config.json for the shape (default: a 2-layer toy)")
      ->check(CLI::ExistingFile);
  sub->add_option("--out", f->out, "Output directory")->required();
  sub->add_option("--seed", f->seed, "Seed of the weights")->capture_default_str();
  sub->add_option("--tokenizer-text", f->text, "Text file to train the tokenizer on (default: a built-in sample)")
      ->check(CLI::ExistingFile);
  register_command(sub, [f] {
    ModelConfig c = f->config.empty() ? ModelConfig::from_json(nlohmann::json::parse(kDefaultConfig), "built-in config")
                                      : ModelConfig::load(f->config);
    std::vector<std::string> lines;
    if (!f->text.empty()) {
      std::istringstream in(read_text_file(f->text));
      for (std::string line; std::getline(in, line);) lines.push_back(line);
    }
    init_model_dir(f->out, c, f->seed, lines);
    fmt::print("wrote {} ({:.2f} M parameters, random weights, seed {})\n", f->out, c.parameter_count() / 1e6, f->seed);
    return 0;
  });
}

}  // namespace lococo::cli
