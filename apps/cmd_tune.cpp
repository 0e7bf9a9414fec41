// lococo tune: post-training mode: LoRA + compressor (+ norms) with linear RoPE
// scaling, to extend the usable context (docs/DESIGN.md section 9).
#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"
#include "lococo/model/lora.h"
#include "lococo/io/safetensors.h"
#include "lococo/kv/registry.h"
#include "lococo/train/train_compressor.h"
#include "training_flags.h"

namespace lococo::cli {

void add_tune_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    CacheFlags cache;
    ChunkTrainingFlags train;
    LoraOptions lora;
    std::string out;
    double rope_scale = 0;  // 0 = B * segments / trained context
    bool merge = false;
  };
  auto f = std::make_shared<Flags>();
  auto& o = f->train.options;
  f->cache.options.budget = 128;
  f->cache.options.chunk = 128;
  auto* sub = root.add_subcommand("tune", "Extend a model's context: LoRA + LoCoCo compressor + linear RoPE scaling");
  add_model_flags(sub, f->model);
  add_cache_flags(sub, f->cache, /*with_policy=*/false);
  sub->add_option("--out", f->out,
                  "Output directory (compressors/m<budget>.safetensors, lora.safetensors); training state goes "
                  "beside it, in OUT.train/")->required();
  add_chunk_training_flags(sub, f->train);
  sub->add_option("--lora-rank", f->lora.rank, "LoRA rank")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--lora-alpha", f->lora.alpha, "LoRA alpha (scale = alpha / rank)")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--lora-targets", f->lora.targets, "Projections with adapters")
      ->check(CLI::IsMember({"q", "k", "v", "o"}))->delimiter(',');
  sub->add_option("--lora-lr-scale", o.lora_lr_scale, "LoRA lr multiplier")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--rope-scale", f->rope_scale, "Linear RoPE scaling factor (0 = chunk x segments / trained context)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--merge-lora", f->merge, "Also write OUT as a plain model directory with merged weights");
  register_command(sub, [f] {
    LoadedModel m = load_model(f->model);
    CompressorTrainOptions o = f->train.options;
    o.cache = cache_options(f->cache, m);
    o.cache.policy = trained_policy();
    std::filesystem::path out = std::filesystem::path(f->out).lexically_normal();
    if (out.filename().empty()) out = out.parent_path();  // "dir/" names dir
    std::filesystem::create_directories(out);
    // The tuned directory holds what a model directory holds; what training
    // leaves (token cache, checkpoint, metrics) goes beside it.
    const std::filesystem::path state = out.string() + ".train";
    o.out = model_compressor_path(out, o.cache.budget);
    o.state_dir = state;
    std::filesystem::create_directories(o.out.parent_path());
    std::filesystem::create_directories(state);
    // RoPE scaling: the tuned context over the trained one.
    ModelConfig config = m.model->config();
    const double trained = static_cast<double>(config.max_position_embeddings);
    const double scale = f->rope_scale > 0 ? f->rope_scale : std::max(1.0, o.cache.chunk * o.segments / trained);
    if (scale > 1.0) {
      config.rope_scaling.type = "linear";
      config.rope_scaling.factor = scale;
    }
    LlamaModel model(config, m.model->weights());
    LoraOptions lora = f->lora;
    lora.seed = o.seed;
    attach_lora(model, lora);
    const auto cache_dir = state / "token-cache";
    TrainingData data = load_training_data(f->train, *m.tokenizer, cache_dir);
    auto r = train_compressor(model, *data.train, data.val.get(), o);
    if (r.interrupted) {
      fmt::print("interrupted after {} steps (checkpoint saved; rerun with --resume)\n", r.steps_done);
      return 130;
    }
    if (o.dist.rank != 0) return 0;  // rank 0 writes the outputs
    NamedTensors adapters;
    for (auto& [n, t] : lora_tensors(model)) adapters.emplace_back(n, t.detach());
    save_safetensors(out / "lora.safetensors", adapters,
                     {{"rank", std::to_string(lora.rank)}, {"alpha", std::to_string(lora.alpha)},
                      {"rope_scale", std::to_string(scale)}});
    if (f->merge) {
      merge_lora(model);
      save_model_dir(out, model);
      for (const char* file : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json"})
        if (std::filesystem::exists(m.dir / file))
          std::filesystem::copy_file(m.dir / file, out / file, std::filesystem::copy_options::overwrite_existing);
    }
    fmt::print("done after {} steps: loss {:.4f}, {:.0f} tokens/s, RoPE scale {:.2f}; wrote {}{}\n", r.steps_done,
               r.last_loss, r.tokens_per_second, scale, out.string(), f->merge ? " (merged model directory)" : "");
    return 0;
  });
}

}  // namespace lococo::cli
