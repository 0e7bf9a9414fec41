// lococo pretrain: train a model from scratch.
#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"
#include "training_flags.h"
#include "lococo/train/pretrain.h"

namespace lococo::cli {

void add_pretrain_command(CLI::App& root) {
  struct Flags {
    PretrainOptions o;
    std::string config, out, tokenizer;
    int threads = 0;
  };
  auto f = std::make_shared<Flags>();
  auto& o = f->o;
  o.optim.lr = 1e-3;
  o.optim.schedule.warmup = 50;
  auto* sub = root.add_subcommand("pretrain", "Train a Llama-family model from scratch (text + passkey examples)");
  sub->add_option("--config", f->config, "HF-style config.json of the model shape")->required()->check(CLI::ExistingFile);
  sub->add_option("--init-from", f->o.init_from, "Continue from this model directory's weights (fresh optimiser)")
      ->check(CLI::ExistingDirectory);
  sub->add_option("--tokenizer", f->tokenizer, "SentencePiece tokenizer.model")->required()->check(CLI::ExistingFile);
  sub->add_option("--data", o.data, "Training text files or directories")->required();
  sub->add_option("--val", o.val, "Validation text files or directories");
  sub->add_option("--out", f->out, "Output model directory")->required();
  sub->add_option("--steps", o.steps, "Optimiser steps")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--batch", o.batch, "Sequences per step")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--seq-len", o.seq_len, "Trained context T")->check(CLI::Range(2, 1 << 20))->capture_default_str();
  sub->add_option("--short-seq-len", o.short_seq_len, "Curriculum: shorter sequences first (0 = off)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--short-steps", o.short_steps, "Curriculum: steps at --short-seq-len")->check(CLI::NonNegativeNumber);
  sub->add_option("--passkey-rate", o.passkey_rate, "Share of passkey sequences")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sub->add_option("--copy-rate", o.copy_rate, "Share of rows that repeat a window (teaches copying)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sub->add_option("--copy-style", o.copy_style,
                  "Copy rows: twice (a text window, then itself) or tiled (a window of 8..T/2 text or shuffled tokens, "
                  "repeated to fill the row)")
      ->check(CLI::IsMember({"twice", "tiled"}))->capture_default_str();
  sub->add_option("--passkey-text-filler", o.passkey_text_filler,
                  "Share of passkey rows whose filler is a window of the training text (the rest: the classic "
                  "sentences)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sub->add_option("--passkey-shuffled-filler", o.passkey_shuffled_filler,
                  "Share of passkey rows whose filler is a shuffled window of the training text")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sub->add_option("--short-passkey-rate", o.short_passkey_rate, "Passkey share in the short phase")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--lr", o.optim.lr, "Peak learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--warmup", o.optim.schedule.warmup, "Warm-up steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--schedule", o.optim.schedule.kind, "Decay after warm-up")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}))->capture_default_str();
  sub->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--clip", o.optim.clip, "Gradient norm clip (0 = off)")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--eval-every", o.eval_every, "Validation every K steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--eval-passkeys", o.eval_passkeys, "Passkey examples (teacher-forced argmax) per validation")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--save-every", o.save_every, "Checkpoint every K steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--seed", o.seed, "Seed of weights and data order")->capture_default_str();
  sub->add_flag("--resume", o.resume, "Continue from OUT/checkpoint");
  sub->add_option("--stop-after", o.stop_after, "Checkpoint and stop after N steps of this run (resume later)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--quiet,-q", o.quiet, "No progress bar");
  add_dist_flags(sub, o.dist);
  sub->add_option("--threads", f->threads, "Intra-op threads (0 = one per core)")->check(CLI::NonNegativeNumber);
  register_command(sub, [f] {
    if (f->threads > 0) torch::set_num_threads(f->threads);
    PretrainOptions o = f->o;
    o.out = f->out;
    o.tokenizer = f->tokenizer;
    const ModelConfig c = ModelConfig::load(f->config);
    PretrainResult r = pretrain(c, o);
    fmt::print("{} after {} steps: loss {:.4f}, best validation loss {}, {:.0f} tokens/s{}\n",
               r.interrupted ? "interrupted (checkpoint saved)" : "done", r.steps_done, r.last_loss,
               r.best_val_loss < 1e29 ? fmt::format("{:.4f}", r.best_val_loss) : "n/a", r.tokens_per_second,
               r.interrupted || o.dist.rank != 0 ? "" : "; model written to " + f->out);
    return r.interrupted ? 130 : 0;
  });
}

}  // namespace lococo::cli
