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
  int64_t sequences = 1;              // sequences side by side per step (global batch, split over ranks)
  double memory_lr_scale = 1000.0;    // lr multiplier of the compressor (reference: 1000)
  bool train_norms = false;           // also train the RMSNorm weights ...
  double norm_lr_scale = 5.0;         // ... at this lr multiplier
  double lora_lr_scale = 1.0;         // lr multiplier of LoRA adapters attached to the model (tune)
  OptimizerOptions optim;             // base lr 5e-5, clip, schedule (total set from steps)
  int64_t eval_every = 0;             // validation every K steps (0 = only at the end when val is given)
  int64_t val_tokens = 4096;          // tokens of validation text scored
  uint64_t seed = 0;
  bool resume = false;                // continue from <out>.ckpt
  int64_t stop_after = 0;             // checkpoint and stop after N steps of this run (0 = off)
  bool quiet = false;
  DistOptions dist;                   // data-parallel ranks (world size 1 = one process)
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

// A training sequence of `length` tokens: a random window of `data`, or with
// probability options.recall_rate a recall row (a passage, other text, the
// passage again, ending the sequence).
torch::Tensor training_sequence(const TokenData& data, int64_t length, const CompressorTrainOptions& options,
                                std::mt19937_64& rng);

// The model's weights stay frozen unless options.train_norms. `val` may be empty.
CompressorTrainResult train_compressor(LlamaModel& model, const TokenData& train, const TokenData* val,
                                       const CompressorTrainOptions& options);

// Streaming PPL of `tokens` under `cache` in chunks of `chunk` (no gradients).
double streaming_ppl(const LlamaModel& model, KvCache& cache, const torch::Tensor& tokens, int64_t chunk);

}  // namespace lococo
