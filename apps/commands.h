// Every `lococo` subcommand, registered in main.
#pragma once

#include <CLI/CLI.hpp>

namespace lococo::cli {

void add_info_command(CLI::App& root);
void add_init_model_command(CLI::App& root);
void add_generate_command(CLI::App& root);
void add_chat_command(CLI::App& root);
void add_perplexity_command(CLI::App& root);
void add_train_tokenizer_command(CLI::App& root);
void add_pretrain_command(CLI::App& root);
void add_train_compressor_command(CLI::App& root);
void add_train_retention_command(CLI::App& root);
void add_tune_command(CLI::App& root);
void add_eval_command(CLI::App& root);
void add_bench_command(CLI::App& root);
void add_serve_command(CLI::App& root);
void add_launch_command(CLI::App& root);
void add_export_gguf_command(CLI::App& root);

inline void add_all_commands(CLI::App& root) {
  add_info_command(root);
  add_init_model_command(root);
  add_generate_command(root);
  add_chat_command(root);
  add_perplexity_command(root);
  add_train_tokenizer_command(root);
  add_pretrain_command(root);
  add_train_compressor_command(root);
  add_train_retention_command(root);
  add_tune_command(root);
  add_eval_command(root);
  add_bench_command(root);
  add_serve_command(root);
  add_launch_command(root);
  add_export_gguf_command(root);
}

}  // namespace lococo::cli
