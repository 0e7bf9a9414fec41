// `lococo train-compressor`: learns the LoCoCo convolutions (and lambda) of every
// layer on a frozen model, by truncated backprop per chunk (docs/DESIGN.md
// section 9): each training sequence is `segments` chunks of B tokens, the
// cache is reset per sequence, and after every chunk whose attention saw a
// fresh compression: loss on that chunk's next-token predictions, backward,
// optimiser step (every `grad_accum` such chunks). `sequences` sequences run in
// lockstep (each with its own cache) and form the global batch of a step; in a
// data-parallel run every rank takes its share of them (distributed.h).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "lococo/kv/compressor.h"
#include "lococo/train/distributed.h"
#include "lococo/kv/cache.h"
#include "lococo/model/model.h"
#include "lococo/tokenizer/token_data.h"
#include "lococo/train/train.h"

namespace lococo {

struct CompressorTrainOptions {
  CacheOptions cache;                 // budget M, chunk B, buffer, keep rate, window, positions
  CompressorOptions compressor;       // kernel, conv layers, ... (shape fields are filled in)
  std::filesystem::path out;          // compressor .safetensors (best by validation, or last)
  std::filesystem::path state_dir;    // its checkpoint (.ckpt) and metrics log; "" = beside `out`
  int64_t segments = 8;               // chunks per training sequence (N)
  int64_t steps = 100;                // optimiser steps
  int64_t grad_accum = 1;             // chunks per optimiser step
  int64_t bptt_chunks = 1;            // chunks a loss reaches back through compressions (1 = the reference)
  std::string objective = "lm";       // lm (next-token loss), distill (KL from the same model with a full
                                      // cache over the same stream), or mix (their sum)
  double recall_rate = 0;             // share of sequences that are recall rows: a passage, text, the passage again
  int64_t recall_passage = 64;        // tokens of a recall row's passage
  bool recall_shuffled = true;        // the passage's tokens in random order (only copying predicts them)
  double recall_lead = 0.5;           // a recall row opens with up to this share of its free tokens as text
                                      // (uniform), so the passage does not always sit at the start
  double recall_weight = 1;           // loss weight of the repeated passage's tokens (1 = like any token)
  int64_t recall_gap = 0;             // tokens between the occurrences: uniform in [gap / 2, gap], text after the
                                      // repeat (so the gap fits a BPTT window); 0 = the repeat ends the sequence
  int64_t sequences = 1;              // sequences side by side per step (global batch, split over ranks)
  double memory_lr_scale = 1000.0;    // lr multiplier of the compressor (reference: 1000)
  bool train_norms = false;           // also train the RMSNorm weights ...
  double norm_lr_scale = 5.0;         // ... at this lr multiplier
  double lora_lr_scale = 1.0;         // lr multiplier of LoRA adapters attached to the model (tune)
  OptimizerOptions optim;             // base lr 5e-5, clip, schedule (total set from steps)
  int64_t eval_every = 0;             // validation every K steps (0 = only at the end when val is given)
  std::string keep = "best";          // the compressor written: "best" by validation PPL, or "last"
  int64_t val_tokens = 4096;          // tokens of validation text scored
  uint64_t seed = 0;
  bool resume = false;                // continue from <out>.ckpt
  int64_t stop_after = 0;             // checkpoint and stop after N steps of this run (0 = off)
  bool quiet = false;
  DistOptions dist;                   // data-parallel ranks (world size 1 = one process)
  // Called on the main rank with every metrics record as it is logged (after
  // each optimiser step: step, loss, lr, grad_norm, ...; after each
  // validation: step, val_ppl_*). Returning false stops the run as --stop-after
  // does (checkpoint, result.interrupted). Null: none.
  std::function<bool(const nlohmann::json& record)> on_metrics;
  bool handle_signals = true;         // SIGINT/SIGTERM checkpoint and stop (off where the host has its own)
};

struct ValidationPpl {
  double lococo = 0, lococo_hh = 0, streaming = 0;
};

struct CompressorTrainResult {
  int64_t steps_done = 0;
  double last_loss = 0;
  double tokens_per_second = 0;
  std::vector<ValidationPpl> validations;
  bool interrupted = false;
};

// Mean over the chunk's tokens of KL(teacher || student): teacher_logp [B, V]
// log-probabilities (the full cache's), student_logits [B, V].
torch::Tensor distillation_loss(const torch::Tensor& teacher_logp, const torch::Tensor& student_logits);

// One training sequence and the loss weight of each of its predictions.
struct TrainingRow {
  torch::Tensor tokens;   // [length]
  torch::Tensor weights;  // [length - 1]: weight of predicting tokens[i + 1]
  torch::Tensor repeat;   // [length - 1] bool: the prediction is of a recall row's repeated passage
};

// A training sequence of `length` tokens: a random window of `data`, or with
// probability options.recall_rate a recall row (a lead of text, a passage,
// other text, the passage again, then text when options.recall_gap is set; the
// repeat's tokens after its first weigh options.recall_weight).
TrainingRow training_sequence(const TokenData& data, int64_t length, const CompressorTrainOptions& options,
                              std::mt19937_64& rng);

// Cross-entropy of logits [B, V] against targets [B], each weighted by
// weights [B] and summed, over B: the mean when every weight is 1.
torch::Tensor weighted_next_token_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                       const torch::Tensor& weights);

// The model's weights stay frozen unless options.train_norms. `val` may be empty.
CompressorTrainResult train_compressor(LlamaModel& model, const TokenData& train, const TokenData* val,
                                       const CompressorTrainOptions& options);

// Streaming PPL of `tokens` under `cache` in chunks of `chunk` (no gradients).
double streaming_ppl(const LlamaModel& model, KvCache& cache, const torch::Tensor& tokens, int64_t chunk);

}  // namespace lococo
