// lococo train-compressor: learn the LoCoCo convolutions on a frozen model.
#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"
#include "lococo/train_compressor.h"

namespace lococo::cli {

void add_train_compressor_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    CacheFlags cache;
    CompressorTrainOptions o;
    std::vector<std::string> data, val;
    std::string out;
  };
  auto f = std::make_shared<Flags>();
  auto& o = f->o;
  f->cache.options.policy = "lococo";
  f->cache.options.budget = 128;
  f->cache.options.chunk = 128;
  auto* sub = root.add_subcommand("train-compressor", "Train LoCoCo compressors (all layers) on a frozen model");
  add_model_flags(sub, f->model);
  add_cache_flags(sub, f->cache, /*with_policy=*/false);
  sub->add_option("--data", f->data, "Training text files or directories")->required();
  sub->add_option("--val", f->val, "Validation text files or directories");
  sub->add_option("--out", f->out, "Output compressor .safetensors")->required();
  sub->add_option("--segments", o.segments, "Chunks per training sequence (N)")->check(CLI::Range(2, 1 << 16))->capture_default_str();
  sub->add_option("--steps", o.steps, "Optimiser steps")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--grad-accum", o.grad_accum, "Chunks per optimiser step")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--lr", o.optim.lr, "Base learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--memory-lr-scale", o.memory_lr_scale, "Learning-rate multiplier of the compressor")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_flag("--train-norms", o.train_norms, "Also train the RMSNorm weights");
  sub->add_option("--norm-lr-scale", o.norm_lr_scale, "Learning-rate multiplier of the norms")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--warmup", o.optim.schedule.warmup, "Warm-up steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--schedule", o.optim.schedule.kind, "Decay after warm-up")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}))->capture_default_str();
  sub->add_option("--clip", o.optim.clip, "Gradient norm clip (0 = off)")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--kernel", o.compressor.kernel, "Conv kernel size (odd)")->capture_default_str();
  sub->add_option("--conv-layers", o.compressor.conv_layers, "Convs per layer")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--eval-every", o.eval_every, "Validation every K steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--val-tokens", o.val_tokens, "Validation tokens scored")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--seed", o.seed, "Seed of the compressor and the data order")->capture_default_str();
  sub->add_flag("--resume", o.resume, "Continue from OUT.ckpt");
  sub->add_option("--stop-after", o.stop_after, "Checkpoint and stop after N steps of this run")->check(CLI::NonNegativeNumber);
  sub->add_flag("--quiet,-q", o.quiet, "No progress bar");
  register_command(sub, [f] {
    LoadedModel m = load_model(f->model);
    CompressorTrainOptions o = f->o;
    o.cache = cache_options(f->cache, *m.model);
    o.cache.policy = "lococo";
    o.out = f->out;
    const auto cache_dir = std::filesystem::path(f->out).parent_path() / "token-cache";
    TokenData train(f->data, *m.tokenizer, cache_dir);
    std::unique_ptr<TokenData> val;
    if (!f->val.empty()) val = std::make_unique<TokenData>(f->val, *m.tokenizer, cache_dir);
    auto model = std::const_pointer_cast<LlamaModel>(m.model);
    auto r = train_compressor(*model, train, val.get(), o);
    fmt::print("{} after {} steps: loss {:.4f}, {:.0f} tokens/s\n", r.interrupted ? "interrupted (checkpoint saved)" : "done",
               r.steps_done, r.last_loss, r.tokens_per_second);
    for (const auto& v : r.validations)
      fmt::print("validation PPL: lococo {:.3f}  lococo-hh {:.3f}  streaming {:.3f}\n", v.lococo, v.lococo_hh, v.streaming);
    return r.interrupted ? 130 : 0;
  });
}

}  // namespace lococo::cli
