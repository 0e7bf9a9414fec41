// Training machinery shared by `pretrain`, `train-compressor` and `tune`:
// AdamW with parameter groups and a warm-up + cosine/linear schedule, gradient
// clipping, checkpoints (atomic, resumable), JSONL metrics, SIGINT handling.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "lococo/train/distributed.h"

namespace lococo {

// Learning-rate multiplier over the steps of a run.
struct Schedule {
  std::string kind = "cosine";  // "cosine" | "linear" | "constant" after warm-up
  int64_t warmup = 0;           // steps of linear warm-up from 0
  int64_t total = 1;            // steps of the whole run
  double min_ratio = 0.1;       // final multiplier of cosine / linear decay
  double factor(int64_t step) const;  // step counts from 0
};

// A set of tensors trained with one learning-rate scale and weight decay.
struct ParamGroup {
  std::string name;                  // "compressor", "norms", "lora", "model", ...
  std::vector<std::pair<std::string, torch::Tensor>> params;  // named, requires_grad on
  double lr_scale = 1.0;             // multiplies the base learning rate
  double weight_decay = 0.0;         // AdamW decoupled weight decay
};

// Splits named tensors into a decayed group and a no-decay group (biases,
// norms, lambda and every other 1-element or 1-D tensor).
std::vector<ParamGroup> split_decay(const std::string& name,
                                    const std::vector<std::pair<std::string, torch::Tensor>>& params,
                                    double lr_scale, double weight_decay);

struct OptimizerOptions {
  double lr = 5e-5;         // base learning rate
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double clip = 1.0;        // max global gradient norm; 0 = no clipping
  Schedule schedule;
};

class Trainer {
 public:
  Trainer(std::vector<ParamGroup> groups, OptimizerOptions options);

  // One optimiser step at index `step` (sets the learning rates, clips, steps,
  // zeroes the gradients). Returns the gradient norm before clipping; throws
  // std::runtime_error naming the step when a gradient is NaN or Inf.
  double step(int64_t step);
  void zero_grad();
  // Data-parallel runs: gradients are averaged over ranks before clipping.
  void set_distributed(Distributed* dist) { dist_ = dist; }
  double current_lr() const { return lr_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  std::vector<torch::Tensor> parameters() const;  // every trained tensor, in group order

  // Checkpoint: `dir/trainable.safetensors` (the named parameters),
  // `dir/optimizer.pt` (AdamW moments), `dir/state.json` (the caller's state:
  // step, RNG, data position, ...). Written into a temporary directory and
  // renamed, so a checkpoint is complete or absent.
  void save_checkpoint(const std::filesystem::path& dir, const nlohmann::json& state) const;
  // Loads into the parameters (names and shapes must match) and the optimiser;
  // returns state.json. Errors name the file and the tensor.
  nlohmann::json load_checkpoint(const std::filesystem::path& dir);

 private:
  std::vector<ParamGroup> groups_;
  OptimizerOptions options_;
  std::unique_ptr<torch::optim::AdamW> adam_;
  double lr_ = 0.0;
  Distributed* dist_ = nullptr;
};

// RNG state to and from text (checkpoints).
std::string rng_state(const std::mt19937_64& rng);
void set_rng_state(std::mt19937_64& rng, const std::string& state);

// Appends one JSON object per line to a metrics file.
class MetricsLog {
 public:
  MetricsLog() = default;
  explicit MetricsLog(const std::filesystem::path& file, bool append);
  void write(const nlohmann::json& j);

 private:
  std::ofstream out_;
};

// SIGINT / SIGTERM set a flag instead of killing the process, so a training
// loop can save a checkpoint and exit cleanly.
void install_stop_handler();

// The checkpoint directory a `--resume` continues from: `dir`, or `dir`.old when
// a crash between the two renames of a save left only that one (logged); empty,
// with a warning naming `dir`, when there is neither (the run starts fresh).
std::filesystem::path checkpoint_to_resume(const std::filesystem::path& dir);
bool stop_requested();
// A resumed run keeps its configuration: std::invalid_argument naming `ckpt`
// and the first flag of `saved` (flag name -> value) whose value differs in `now`.
void refuse_changed_config(const nlohmann::json& saved, const nlohmann::json& now, const std::filesystem::path& ckpt);
// `--resume` in one place: when `resume` and a checkpoint is found
// (checkpoint_to_resume), refuses a changed `config` (unless null), loads the
// optimiser into `trainer` and the data order into `rng`, and returns the
// saved state ("step" and the trainer's own fields); otherwise an empty object.
nlohmann::json resume_checkpoint(Trainer& trainer, const std::filesystem::path& ckpt, bool resume,
                                 std::mt19937_64& rng, const nlohmann::json& config = nullptr);

// Cross-entropy of logits [..., V] against targets [...] (mean over tokens).
torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace lococo
