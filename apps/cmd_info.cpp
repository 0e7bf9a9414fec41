// lococo info: what a model directory holds.
#include <chrono>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "commands.h"
#include "lococo/core/memory_stats.h"

namespace lococo::cli {

void add_info_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    std::string positional;
    bool json = false;
  };
  auto f = std::make_shared<Flags>();
  auto* sub = root.add_subcommand("info", "Show a model's configuration, parameter count and memory per token");
  sub->add_option("model_dir", f->positional, "Model directory or .gguf file (same as --model)");
  add_model_flags(sub, f->model);
  sub->add_flag("--json", f->json, "Print JSON");
  register_command(sub, [f] {
    if (!f->positional.empty()) f->model.dir = f->positional;
    const auto start = std::chrono::steady_clock::now();
    LoadedModel m = load_model(f->model);
    const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const ModelConfig& c = m.model->config();
    const int64_t elem = m.model->weights().embed.element_size();
    nlohmann::json j = {{"dir", m.dir.string()},
                        {"format", m.format},
                        {"config", c.to_json()},
                        {"parameters", c.parameter_count()},
                        {"weight_bytes", c.parameter_count() * elem},
                        {"kv_bytes_per_token", c.kv_bytes_per_token(elem)},
                        {"tokenizer_vocab", m.tokenizer->vocab_size()},
                        {"dtype", f->model.dtype},
                        {"load_seconds", load_seconds},
                        {"peak_rss_bytes", peak_rss_bytes()}};
    if (f->json) {
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    fmt::print("model         {}\n", m.dir.string());
    fmt::print("format        {}\n", m.format);
    fmt::print("architecture  {}\n", c.architecture);
    fmt::print("layers        {}   hidden {}   mlp {}\n", c.num_layers, c.hidden_size, c.intermediate_size);
    fmt::print("heads         {} query, {} key/value (group {}), head_dim {}\n", c.num_heads, c.num_kv_heads,
               c.group_size(), c.head_dim);
    fmt::print("vocab         {} (tokenizer {})\n", c.vocab_size, m.tokenizer->vocab_size());
    fmt::print("rope          theta {}  scaling {} x{}\n", c.rope_theta, c.rope_scaling.type, c.rope_scaling.factor);
    fmt::print("context       {} trained positions\n", c.max_position_embeddings);
    fmt::print("embeddings    {}\n", c.tie_word_embeddings ? "tied" : "untied");
    fmt::print("parameters    {} ({:.2f} M)\n", c.parameter_count(), c.parameter_count() / 1e6);
    fmt::print("weights       {:.2f} MiB as {}\n", c.parameter_count() * elem / 1048576.0, f->model.dtype);
    fmt::print("loaded in     {:.2f} s, peak RSS {:.1f} MiB\n", load_seconds, peak_rss_bytes() / 1048576.0);
    fmt::print("KV per token  {} bytes ({:.1f} KiB)\n", c.kv_bytes_per_token(elem), c.kv_bytes_per_token(elem) / 1024.0);
    return 0;
  });
}

}  // namespace lococo::cli
