// lococo train-retention: learn which tokens a LoCoCo cache keeps (learned
// retention) on a frozen model (targets: lococo/train/retention_targets.h).
#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"
#include "lococo/kv/registry.h"
#include "lococo/train/train_retention.h"

namespace lococo::cli {

void add_train_retention_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    CacheFlags cache;
    RetentionTrainOptions options;
    std::vector<std::string> data, val;
    std::string out, init, target = "loss-gradient";
  };
  auto f = std::make_shared<Flags>();
  f->cache.options.policy = trained_policy();
  f->cache.options.budget = 128;
  f->cache.options.chunk = 256;
  f->options.compressor.retention_hidden = 64;
  f->options.optim.lr = 3e-3;
  f->options.far = 64;
  f->options.horizon = 256;
  f->options.optim.schedule.warmup = 20;
  auto& o = f->options;
  auto* sub = root.add_subcommand(
      "train-retention", "Train a LoCoCo compressor's learned retention (which tokens a compression keeps) on a "
                         "frozen model, against what far queries need from each token");
  add_model_flags(sub, f->model);
  add_cache_flags(sub, f->cache, /*with_policy=*/false);
  sub->add_option("--data", f->data, "Training text files or directories")->required();
  sub->add_option("--val", f->val, "Validation text files or directories (default: rows from --data)");
  sub->add_option("--out", f->out, "Output compressor .safetensors (checkpoint in OUT.ckpt, metrics in "
                                   "OUT.metrics.jsonl)")->required();
  sub->add_option("--init", f->init, "Start from this compressor: its convs are kept, retention is trained");
  sub->add_option("--retention-hidden", o.compressor.retention_hidden, "Hidden width of each layer's retention MLP")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--retention-sinks", o.compressor.retention_sinks,
                  "The first tokens of a stream always kept (attention sinks), recorded in the file")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--kernel", o.compressor.kernel, "Conv kernel size of a fresh compressor (odd)")->capture_default_str();
  sub->add_option("--length", o.length, "Tokens per training row (at most the model's trained context)")
      ->check(CLI::Range(2, 1 << 20))->capture_default_str();
  sub->add_option("--target", f->target, "What a token's importance is: far-attention (the most attention a far "
                                         "query gave it) or loss-gradient (how much the loss of the row's last "
                                         "--horizon tokens would gain from its attention, where a bounded cache "
                                         "would be)")
      ->check(CLI::IsMember({"far-attention", "loss-gradient"}))->capture_default_str();
  sub->add_option("--attention-share", o.share, "loss-gradient: the share of its attention every candidate token "
                                                "keeps while the gradient is read (a cache that dropped nearly all)")
      ->check(CLI::Range(1e-12, 1.0))->capture_default_str();
  sub->add_option("--far", o.far, "Only tokens at least this many tokens before the queries that judge them are "
                                  "trained on (far-attention: attention counts from such queries only)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_flag("--copy-labels", o.copy_labels, "Tokens the last --horizon tokens copy (three tokens repeated, "
                                                "found once before) get the row's top target");
  sub->add_option("--copy-weight", o.copy_weight, "--copy-labels/--copy-head: a copied token's weight in the loss (others 1)")
      ->check(CLI::Range(1.0, 1e4))->capture_default_str();
  sub->add_option("--copy-layers", o.copy_layers, "--copy-labels/--copy-head: only these layers get copy labels (0-based; default every layer)")
      ->delimiter(',')->check(CLI::NonNegativeNumber);
  sub->add_flag("--copy-head", o.compressor.retention_copy,
                "Learn a copy logit per head beside the score (labels as --copy-labels, weight --copy-weight, in "
                "--copy-layers); the long-term slots go to the tokens it flags, the scores keep ranking text");
  sub->add_option("--train-layers", o.train_layers, "Train only these layers' retention (0-based), keeping the others "
                                                    "as --init has them (default: every layer, fresh)")
      ->delimiter(',')->check(CLI::NonNegativeNumber);
  sub->add_option("--horizon", o.horizon, "The last tokens of a row are not trained on")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--steps", o.steps, "Optimiser steps")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--sequences", o.sequences, "Rows per step")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--recall-rate", o.recall_rate, "Share of recall rows (a passage, text, the passage again)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sub->add_option("--passkey-rate", o.passkey_rate, "Share of passkey rows (a key in filler, the answer last)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sub->add_option("--recall-passage", o.recall_passage, "Tokens of a recall row's passage")
      ->check(CLI::Range(2, 1 << 16))->capture_default_str();
  sub->add_option("--lr", o.optim.lr, "Learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--warmup", o.optim.schedule.warmup, "Warm-up steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--eval-every", o.eval_every, "Validation every K steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--val-rows", o.val_rows, "Fixed validation rows")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--seed", o.seed, "Seed of the initial weights and the data")->capture_default_str();
  sub->add_flag("--resume", o.resume, "Continue from the checkpoint beside the output");
  sub->add_option("--stop-after", o.stop_after, "Checkpoint and stop after N steps of this run")->check(CLI::NonNegativeNumber);
  sub->add_flag("--quiet,-q", o.quiet, "No progress bar");
  register_command(sub, [f] {
    LoadedModel m = load_model(f->model);
    RetentionTrainOptions o = f->options;
    o.cache = cache_options(f->cache, m);
    o.cache.policy = trained_policy();
    o.out = f->out;
    o.init = f->init;
    o.target = parse_retention_target(f->target);
    const auto cache_dir = std::filesystem::path(f->out).parent_path() / "token-cache";
    TokenData train(f->data, *m.tokenizer, cache_dir);
    std::unique_ptr<TokenData> val;
    if (!f->val.empty()) val = std::make_unique<TokenData>(f->val, *m.tokenizer, cache_dir);
    auto r = train_retention(*m.model, *m.tokenizer, train, val.get(), o);
    fmt::print("{} after {} steps: loss {:.4f}, best val_top_k {:.3f}\n",
               r.interrupted ? "interrupted (checkpoint saved)" : "done", r.steps_done, r.last_loss, r.best_top_k);
    return r.interrupted ? 130 : 0;
  });
}

}  // namespace lococo::cli
