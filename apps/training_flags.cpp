#include "training_flags.h"

namespace lococo::cli {

void add_chunk_training_flags(CLI::App* sub, ChunkTrainingFlags& f) {
  auto& o = f.options;
  sub->add_option("--data", f.data, "Training text files or directories")->required();
  sub->add_option("--val", f.val, "Validation text files or directories");
  sub->add_option("--segments", o.segments, "Chunks per training sequence (N)")
      ->check(CLI::Range(2, 1 << 16))->capture_default_str();
  sub->add_option("--steps", o.steps, "Optimiser steps")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--grad-accum", o.grad_accum, "Chunks per optimiser step")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--bptt-chunks", o.bptt_chunks,
                  "Chunks through which stored slots keep their autograd history: a loss trains the compressions of "
                  "that many chunks back (1 = the reference's truncated backprop); needs --grad-accum >= it, "
                  "since each optimiser step ends the window")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--objective", o.objective,
                  "Loss: lm (next token), distill (KL from the same model with a full cache), or mix (both)")
      ->check(CLI::IsMember({"lm", "distill", "mix"}))->capture_default_str();
  sub->add_option("--recall-rate", o.recall_rate,
                  "Share of sequences that are recall rows (a passage, other text, the passage again)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sub->add_option("--recall-passage", o.recall_passage, "Tokens of a recall row's passage")
      ->check(CLI::Range(2, 1 << 16))->capture_default_str();
  sub->add_flag("!--recall-text", o.recall_shuffled, "Recall passages as text (default: their tokens shuffled)");
  sub->add_option("--recall-lead", o.recall_lead,
                  "A recall row opens with text of up to this share of its free tokens (uniform), then the passage")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sub->add_option("--recall-weight", o.recall_weight, "Loss weight of a recall row's repeated passage")
      ->check(CLI::Range(0.0, 1e6))->capture_default_str();
  sub->add_option("--recall-gap", o.recall_gap,
                  "Longest gap of a recall row in tokens (uniform from half of it), text after the repeat; "
                  "0 = the repeat ends the sequence")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
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
  sub->add_flag("--slot-features", o.compressor.slot_features,
                "The conv also reads each slot's score and whether it is a fused slot");
  sub->add_flag("--lambda-sigmoid", o.compressor.lambda_sigmoid, "Mix by sigmoid(lambda), kept in (0, 1)");
  sub->add_option("--lambda-init", o.compressor.lambda_init, "Initial mixing weight of the learned part (lambda)")
      ->capture_default_str();
  sub->add_option("--init-std", o.compressor.init_std,
                  "Std of the initial conv weights (1: the reference; smaller starts P soft)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--eval-every", o.eval_every, "Validation every K steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--keep", o.keep, "The compressor written: best (by validation PPL) or last")
      ->check(CLI::IsMember({"best", "last"}))->capture_default_str();
  sub->add_option("--val-tokens", o.val_tokens, "Validation tokens scored")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--seed", o.seed, "Seed of the compressor and the data order")->capture_default_str();
  sub->add_flag("--resume", o.resume, "Continue from the checkpoint beside the output");
  sub->add_option("--stop-after", o.stop_after, "Checkpoint and stop after N steps of this run")->check(CLI::NonNegativeNumber);
  sub->add_option("--sequences", o.sequences, "Sequences side by side per step (the global batch, split over ranks)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_flag("--quiet,-q", o.quiet, "No progress bar");
  add_dist_flags(sub, o.dist);
}

void add_dist_flags(CLI::App* sub, DistOptions& d) {
  sub->add_option("--world-size", d.world_size, "Data-parallel processes (ranks)")->check(CLI::Range(1, 4096))->capture_default_str();
  sub->add_option("--rank", d.rank, "This process's rank (0 writes outputs)")->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--master", d.master, "HOST:PORT of rank 0's rendezvous")->capture_default_str();
  sub->add_option("--dist-timeout", d.timeout_seconds, "Seconds before a silent peer fails the run")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--dist-main-timeout", d.main_timeout_seconds,
                  "Seconds the other ranks wait for rank 0's validation and checkpoints")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--dist-host", d.host,
                  "This rank's address for the collectives (default: this machine's address on the route to --master)");
  sub->add_option("--dist-store-dir", d.store_dir,
                  "Meet through a file store in this directory instead of rank 0's TCP store (one machine; "
                  "lococo launch sets it)");
}

TrainingData load_training_data(const ChunkTrainingFlags& f, const Tokenizer& tokenizer,
                                const std::filesystem::path& cache_dir) {
  TrainingData d;
  d.train = std::make_unique<TokenData>(f.data, tokenizer, cache_dir);
  if (!f.val.empty()) d.val = std::make_unique<TokenData>(f.val, tokenizer, cache_dir);
  return d;
}

}  // namespace lococo::cli
