// lococo export-gguf: a model directory as one GGUF file that llama.cpp loads.
#include <filesystem>

#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"
#include "lococo/model/gguf_llama.h"

namespace lococo::cli {

void add_export_gguf_command(CLI::App& root) {
  struct Flags {
    std::string model_dir, out, type = "f16";
  };
  auto f = std::make_shared<Flags>();
  auto* sub = root.add_subcommand("export-gguf", "Write a model directory as a GGUF file (llama.cpp's format)");
  sub->add_option("model_dir", f->model_dir, "Model directory (config.json, model.safetensors, tokenizer.model or tokenizer.json)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->add_option("out", f->out, "Output .gguf file")->required();
  sub->add_option("--type", f->type, "Type of the 2-D weights (norms and biases stay f32)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0"}, CLI::ignore_case))
      ->capture_default_str();
  register_command(sub, [f] {
    const std::filesystem::path dir = f->model_dir;
    LoadedModel m = load_model_dir(dir);
    const GgufTokenizer tokenizer = gguf_tokenizer_of_dir(dir, m.model->config());
    const GgmlType type = ggml_type_from_name(f->type);
    std::string name = std::filesystem::absolute(dir).lexically_normal().filename().string();
    if (name.empty()) name = std::filesystem::absolute(dir).lexically_normal().parent_path().filename().string();
    export_gguf(*m.model, tokenizer, f->out, type, name);
    fmt::print("wrote {} ({}, {:.1f} MiB)\n", f->out, ggml_type_name(type),
               std::filesystem::file_size(f->out) / 1048576.0);
    return 0;
  });
}

}  // namespace lococo::cli
