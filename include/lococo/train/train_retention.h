// `lococo train-retention`: learns the retention MLPs of a LoCoCo compressor
// (learned retention, lococo/kv/compressor.h) on a frozen model, by regression
// against what far queries need from each token (docs/DESIGN.md section 9).
//
// A step draws `sequences` rows of `length` tokens: text, recall rows (a
// passage, text, the passage again: train_compressor.h's generator) and
// passkey rows (the key's sentence in filler of the classic sentences,
// training text or shuffled training text, the answer at the end), each
// opening with BOS as every stream does (the attention sink). For every
// layer, KV head and token t of a row's trained prefix
// (lococo/train/retention_targets.h: by default the loss gradient, where a
// bounded cache would be, of the row's last `horizon` tokens):
//   target   y = log(eps + importance_t / mean importance)
//   loss       mean of (score_t - y_t)^2, score_t = retention_scores(k_raw_t, v_t),
//              both centred over the row's tokens per layer and head (only the
//              ranking of scores matters, so their offset is left free); the
//              first retention_sinks tokens, always kept, are left out;
//              with --copy-labels, copied tokens weigh --copy-weight;
//              with --copy-head, the copy labels train the compressor's copy
//              logits instead (copy_head_loss, added), the targets untouched
// A token's score is only ever compared with other tokens' scores, so the
// metric that picks the compressor is the ranking's: of the K = M r - w tokens
// with the highest targets in each layer and head (the heavy hitters a
// compression keeps), the share also among the K highest scores
// ("val_top_k", on fixed validation rows).
#pragma once

#include <filesystem>
#include <random>
#include <string>

#include "lococo/kv/cache.h"
#include "lococo/kv/compressor.h"
#include "lococo/model/model.h"
#include "lococo/tokenizer/token_data.h"
#include "lococo/tokenizer/tokenizer.h"
#include "lococo/train/retention_targets.h"
#include "lococo/train/train.h"

namespace lococo {

// The tokens a row's last `horizon` tokens copy: i < n whose three tokens
// ending at i occur again ending inside the last horizon, and nowhere else
// before it (a unique match, so the copy needs token i itself). [n] bool
torch::Tensor copied_tokens(const torch::Tensor& row, int64_t n, int64_t horizon);

struct RetentionTrainOptions {
  CacheOptions cache;             // budget M, keep rate, window (recorded in the file); chunk of the model's passes
  CompressorOptions compressor;   // retention_hidden and the conv hyper-parameters of a fresh compressor
  std::filesystem::path init;     // start from this compressor (its convs kept, retention trained); "" = fresh
  std::filesystem::path out;      // the compressor written (best by val_top_k); checkpoint and metrics beside it
  int64_t length = 2048;          // tokens per row (at most the model's trained context)
  RetentionTarget target = RetentionTarget::LossGradient;  // what a token's importance is (retention_targets.h)
  double share = 1e-4;            // loss-gradient: the attention share candidates keep while it is read
  int64_t far = 64;               // trained tokens are at least this far before the queries that judge them
  int64_t horizon = 256;          // the last tokens: the loss chunk (loss-gradient), untrained (far-attention)
  // Tokens the loss chunk copies (copied_tokens) get the row's top target: the
  // gradient ranks a repeated passage's tokens no higher than text, while
  // keeping them recovers nearly all of the copy (docs/DESIGN.md section 9).
  bool copy_labels = false;
  // Weight of a copied token in the loss (the others weigh 1): a passage is a
  // few dozen tokens of a row of thousands, and a layer that copies must rank
  // all of them above the text's best.
  double copy_weight = 1;
  std::vector<int64_t> copy_layers;  // the layers whose targets get copy labels (empty = every layer)
  // Train only these layers' retention MLPs; the others stay as --init has
  // them (which must then have learned retention). Empty = every layer.
  std::vector<int64_t> train_layers;
  int64_t steps = 300;            // optimiser steps
  int64_t sequences = 2;          // rows per step
  double recall_rate = 0.3;       // share of recall rows
  double passkey_rate = 0.3;      // share of passkey rows
  int64_t recall_passage = 64;    // tokens of a recall row's passage
  double eps = 1e-3;              // floor inside the target's log, relative to the row's mean target
  int64_t val_rows = 6;           // fixed validation rows (from `val`, or from the training data)
  int64_t eval_every = 50;        // validation every K steps, and at the end
  OptimizerOptions optim;         // base lr, clip, schedule (total set from steps)
  uint64_t seed = 0;
  bool resume = false;            // continue from <out>.ckpt
  int64_t stop_after = 0;         // checkpoint and stop after N steps of this run (0 = off)
  bool quiet = false;
};

struct RetentionTrainResult {
  int64_t steps_done = 0;
  double last_loss = 0;
  double best_top_k = 0;          // best val_top_k seen
  bool interrupted = false;
};

// One row of the retention data (see above): tokens [<= length] int64.
torch::Tensor retention_row(const TokenData& data, const Tokenizer& tokenizer, const std::vector<int64_t>& corpus,
                            const RetentionTrainOptions& options, std::mt19937_64& rng);

// With a copy head (CompressorOptions::retention_copy): the binary cross-entropy
// of its logits against the row's copy labels, a copied token weighing
// pos_weight, averaged over `layers` (empty: every layer). [] scalar
torch::Tensor copy_head_loss(const LococoCompressor& compressor, const RetentionRow& row,
                             const std::vector<int64_t>& layers, double pos_weight);

// The loss above of one row whose targets are already y, over `layers` (empty:
// every layer). [] scalar, differentiable in the compressor's retention parameters.
torch::Tensor retention_regression_loss(const LococoCompressor& compressor, const RetentionRow& row,
                                        const std::vector<int64_t>& layers = {});

// The model is frozen. `val` may be null (validation rows then come from `train`).
RetentionTrainResult train_retention(const LlamaModel& model, const Tokenizer& tokenizer, const TokenData& train,
                                     const TokenData* val, const RetentionTrainOptions& options);

}  // namespace lococo
