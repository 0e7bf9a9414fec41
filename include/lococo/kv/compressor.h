// The LoCoCo compressor (docs/DESIGN.md section 4): per layer, a small 1-D
// convolution stack that fuses the cache slots that are not heavy hitters into
// m = floor(M (1 - r)) new slots, mixed with plain heavy-hitter selection by a
// learnable lambda.
//
// Compress(L slots -> M), per layer and KV head, given per-slot scores s [L]:
//   keep = M - m slots verbatim: the top-(keep - w) by s among the first L - w,
//   plus the last w; H, in cache order. The other S = L - keep slots N, in order:
//     X = concat(K_N, V_N) as channels        [2d, S]   (+ 2 slot features, below)
//     Z = act(conv(... act(conv(X))))         [m, S]   act after every conv
//     P = softmax(Z) over S (fp32)            [m, S]
//     R = one-hot rows of the top-m of N by s, in position order
//     W = (1 - lambda) R + lambda P           [m, S]   every row sums to 1
//                                                      (sigmoid(lambda) with lambda_sigmoid)
//   new cache = [K_H; W K_N], [V_H; W V_N]    [M, d]
// The conv of a layer is shared by its KV heads: the heads are the batch of Conv1d.
// With slot_features, X gains two channels per slot: its score as log(s + eps)
// centred over N (scale-free: accumulated scores grow with the stream), and 1
// for a slot that is itself a fused slot (0 for a token's own key and value),
// so the conv can tell what the cache already carries from what just arrived.
//
// Learned retention (retention_hidden > 0): the heavy hitters are ranked not by
// attention but by a score each token gets once, when it enters the cache: a
// small MLP per layer reads the token's key (before RoPE) and value of every KV
// head and predicts, per KV head, the log of the most attention the token will
// get from queries far after it (train/train_retention.h learns it against the
// full cache). A token's own key and value already carry its context, so the
// score needs no neighbours and does not depend on how the stream is chunked.
// The first retention_sinks tokens of a stream are always kept: every later
// query parks attention on them (the attention sink), and a token's key and
// value alone do not say that it came first.
//
// Saved as safetensors; the metadata records the hyper-parameters and the model
// shape, so a file describes itself and a mismatch is refused with the field named.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "lococo/core/config.h"
#include "lococo/kv/cache.h"

namespace lococo {

// m = floor(M (1 - r)), with the reference's float truncation.
int64_t fused_slot_count(int64_t budget, double keep_rate);

struct CompressorOptions {
  // The model shape it serves.
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  // The cache it serves.
  int64_t budget = 512;      // M: slots after a compression
  double keep_rate = 0.5;    // r: share of M kept verbatim (heavy hitters + window)
  int64_t local_window = 0;  // w: the last w slots are always kept (inside the kept share)
  int64_t buffer = 16;       // b: recorded for the record; shapes do not depend on it
  // The convolution stack of each layer.
  int64_t kernel = 21;             // odd: zero padding (k - 1) / 2 keeps the length S
  int64_t conv_layers = 1;         // convs per layer
  int64_t expand = 1;              // hidden channels m * expand between convs (conv_layers > 1)
  std::string activation = "relu"; // after every conv, the last included: relu | gelu | silu | none
  double lambda_init = 0.5;        // initial mixing weight of the learned part
  double init_std = 1.0;           // std of the initial conv weights (the reference's N(0, 1) makes P nearly
                                   // one-hot, its gradient small); training only, not stored in files
  bool lambda_sigmoid = false;     // the mixing weight is sigmoid(lambda), kept in (0, 1)
  bool slot_features = false;      // the conv also reads each slot's score and a fused-slot marker
  int64_t retention_hidden = 0;    // learned retention: hidden width of its MLP (0 = none: attention ranks slots)
  int64_t retention_sinks = 4;     // learned retention: the first tokens of a stream are always kept (attention sinks)
  bool retention_copy = false;     // learned retention: a copy logit per head beside the score (see retention_outputs)
  bool learned_retention() const { return retention_hidden > 0; }
  int64_t retention_outputs() const { return num_kv_heads * (retention_copy ? 2 : 1); }  // the MLP's last width
  int64_t retention_inputs() const { return num_kv_heads * 2 * head_dim; }  // [k_raw; v] of every KV head
  int64_t input_channels() const { return 2 * head_dim + (slot_features ? 2 : 0); }  // C of X

  int64_t fused() const { return fused_slot_count(budget, keep_rate); }  // m
  int64_t kept() const { return budget - fused(); }                       // M - m

  // Throws std::invalid_argument naming the flag of a bad value.
  void validate() const;
  // The model shape of `config`, the cache fields of `cache`, defaults for the rest.
  static CompressorOptions from(const ModelConfig& config, const CacheOptions& cache);
  // These hyper-parameters (kernel, conv layers, ...) with the shape and cache
  // fields taken from `config` and `cache`.
  CompressorOptions with_shape_of(const ModelConfig& config, const CacheOptions& cache) const;
  // "" when a compressor made with these options serves this model and cache;
  // otherwise "field: compressor X, model/flag Y" for the first difference.
  std::string mismatch(const ModelConfig& config, const CacheOptions& cache) const;
};

// The score a cache stores for tokens of a compressor with a copy head:
// tokens it flags (copy > 0) score protect + copy, above all text, and the
// long-term slots (CacheOptions' retention_protect) go to them alone; the
// others keep their score, capped just below protect. All [Hkv, T].
constexpr double kBelowProtect = 0.01;
constexpr double kCopyInitLogit = -4;  // a fresh copy head's logit for every token (flags none)
torch::Tensor copy_aware_scores(const torch::Tensor& scores, const torch::Tensor& copy, double protect);

// How one layer's L stored slots split (per KV head; indices into the slots).
struct SlotPartition {
  torch::Tensor heavy;   // [Hkv, keep] int64: kept verbatim, cache order
  torch::Tensor rest;    // [Hkv, S] int64: the others N, cache order
  torch::Tensor chosen;  // [Hkv, m] int64: positions within `rest` of the top-m by score, ascending (R's ones)
};

// scores [Hkv, L]; keep >= w; m <= L - keep.
SlotPartition partition_slots(const torch::Tensor& scores, int64_t keep, int64_t w, int64_t m);

struct CompressedSlots {
  torch::Tensor keys, values;  // [Hkv, M, d] fp32: heavy hitters in cache order, then the m fused slots
  torch::Tensor scores;        // [Hkv, M] fp32, detached: heavy hitters' own, W s_N for fused slots
  torch::Tensor mixing;        // [Hkv, m, S] fp32: W (undefined when m = 0)
  SlotPartition parts;
};

// One layer: the conv stack and lambda. Parameters are named
// "convs.<j>.weight" [out, in, k], "convs.<j>.bias" [out], "lambda" [1], and with
// learned retention "retention.0.weight" [hidden, Hkv 2d], "retention.0.bias",
// "retention.2.weight" [Hkv, hidden], "retention.2.bias" (2 Hkv rows with
// retention_copy: the scores', then the copy logits').
class CompressorLayerImpl : public torch::nn::Module {
 public:
  explicit CompressorLayerImpl(const CompressorOptions& options);

  // x [Hkv, C, S] fp32 -> P [Hkv, m, S]: softmax over positions of the conv stack's output.
  torch::Tensor fusion_weights(const torch::Tensor& x) const;
  // The weight of P in W: lambda, or sigmoid(lambda). [1]
  torch::Tensor mix() const;
  // Learned retention: keys (before RoPE) and values [Hkv, T, d] of T tokens ->
  // their retention scores [Hkv, T] fp32 (log of predicted far attention).
  torch::Tensor retention_scores(const torch::Tensor& keys, const torch::Tensor& values) const;
  // The same scores and, with retention_copy, the copy logits [Hkv, T] (> 0:
  // a later repeat of the text will copy the token; undefined without).
  struct RetentionOutputs {
    torch::Tensor scores, copy;
  };
  RetentionOutputs retention_outputs(const torch::Tensor& keys, const torch::Tensor& values) const;

  std::vector<torch::nn::Conv1d> convs;
  torch::Tensor lambda;  // [1]: the raw parameter (the logit of the weight with lambda_sigmoid)
  torch::nn::Sequential retention{nullptr};  // Linear(Hkv 2d, hidden), GELU, Linear(hidden, Hkv [x 2]); or null

 private:
  std::string activation_;
  bool sigmoid_ = false;
};
TORCH_MODULE(CompressorLayer);

class LococoCompressor : public torch::nn::Module {
 public:
  // Reference initialisation, deterministic in `seed`: conv weights N(0, 1), biases
  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch's default, lambda = lambda_init.
  // Throws std::invalid_argument for bad options.
  explicit LococoCompressor(CompressorOptions options, uint64_t seed = 0);

  const CompressorOptions& options() const { return options_; }
  CompressorLayerImpl& layer(int i) { return *layers_.at(i); }
  const CompressorLayerImpl& layer(int i) const { return *layers_.at(i); }

  // The parameters of the retention MLPs (empty without learned retention), and
  // of the convs and lambdas: trained by different commands.
  std::vector<std::pair<std::string, torch::Tensor>> retention_parameters() const;
  std::vector<std::pair<std::string, torch::Tensor>> fusion_parameters() const;

  // x [Hkv, C, S]; chosen [Hkv, m] (see SlotPartition). Returns W [Hkv, m, S].
  torch::Tensor mixing_weights(int layer, const torch::Tensor& x, const torch::Tensor& chosen) const;

  // keys, values [Hkv, L, d] (any dtype), scores [Hkv, L], L >= M; fused [Hkv, L]
  // bool, true for slots that are fused slots (read with slot_features; undefined
  // = none). Differentiable in the parameters when grad mode is on.
  CompressedSlots compress(int layer, const torch::Tensor& keys, const torch::Tensor& values,
                           const torch::Tensor& scores, const torch::Tensor& fused = {}) const;

  // Atomic write: fp32 tensors + metadata (hyper-parameters and model shape).
  void save(const std::filesystem::path& file) const;
  // Reads a file, trusting its metadata. Throws std::runtime_error naming the file
  // and the field / tensor on missing metadata, bad values or wrong shapes.
  static std::shared_ptr<LococoCompressor> load(const std::filesystem::path& file);
  // A file's hyper-parameters and the cache it was trained for, from its metadata alone.
  static CompressorOptions read_options(const std::filesystem::path& file);
  // Reads a file and checks it serves this model and cache (layers, KV heads,
  // head_dim, budget, keep rate, local window); runtime_error names file and field.
  static std::shared_ptr<LococoCompressor> load(const std::filesystem::path& file, const ModelConfig& config,
                                                const CacheOptions& cache);

 private:
  CompressorOptions options_;
  std::vector<CompressorLayer> layers_;
};

}  // namespace lococo
