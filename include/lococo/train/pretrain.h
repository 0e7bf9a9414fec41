// `lococo pretrain`: a Llama-family model trained from scratch on text (packed
// random windows, documents separated by BOS) mixed with synthetic passkey
// examples, all parameters, AdamW with warm-up + cosine decay.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "lococo/core/config.h"
#include "lococo/train/distributed.h"
#include "lococo/train/train.h"

namespace lococo {

struct PretrainOptions {
  std::filesystem::path out;            // model directory written at the end (checkpoint in out/checkpoint)
  std::filesystem::path tokenizer;      // tokenizer.model to train with (copied into `out`)
  std::filesystem::path init_from;      // start from this model directory's weights (empty = random init)
  std::vector<std::string> data;        // training text files / directories
  std::vector<std::string> val;         // validation text (optional)
  int64_t steps = 1000;                 // optimiser steps
  int64_t batch = 8;                    // sequences per step at the full length
  int64_t seq_len = 1024;               // T, the trained context
  int64_t short_seq_len = 0;            // curriculum: shorter sequences first (0 = off) ...
  int64_t short_steps = 0;              // ... for this many steps (same tokens per step)
  double passkey_rate = 0.1;            // share of sequences that are passkey examples
  double short_passkey_rate = -1;       // passkey share during the short phase (-1 = passkey_rate)
  double passkey_text_filler = 0;       // share of passkey rows whose filler is a window of the training text ...
  double passkey_shuffled_filler = 0;   // ... or such a window shuffled (the rest: the classic sentences), so
                                        // retrieval does not hang on one filler
  double copy_rate = 0;                 // share of rows that repeat a window (teaches copying)
  std::string copy_style = "twice";     // copy rows: "twice" (a text window, then itself) or "tiled" (short windows repeated)
  int64_t eval_every = 100;             // validation loss every K steps (0 = never)
  int64_t eval_windows = 8;             // validation windows of seq_len tokens
  int64_t eval_passkeys = 16;           // passkey examples of the current length checked at each evaluation (0 = none)
  int64_t save_every = 100;             // checkpoint every K steps
  double weight_decay = 0.1;
  OptimizerOptions optim;               // lr, betas, clip, schedule (total set from steps)
  uint64_t seed = 0;                    // weights, data order and passkeys
  bool resume = false;                  // continue from out/checkpoint
  int64_t stop_after = 0;               // checkpoint and stop after this many steps in this run (0 = off)
  bool quiet = false;                   // no progress bar
  DistOptions dist;                     // data-parallel ranks: each trains on its share of every batch
};

struct PretrainResult {
  int64_t steps_done = 0;
  double last_loss = 0, best_val_loss = 0;
  double tokens_per_second = 0;
  bool interrupted = false;
};

PretrainResult pretrain(const ModelConfig& config, const PretrainOptions& options);

}  // namespace lococo
