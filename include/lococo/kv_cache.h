// The KV cache: one small interface, several policies behind it.
//
// Per-sequence state (keys, values, per-slot scores, how many tokens were seen)
// lives here, never in the model. The model calls, for every chunk and layer:
//
//   prepare(layer, n)            may evict or compress the stored slots
//   chunk_position(layer)        RoPE position of the chunk's first token
//   append(layer, k_raw, k_rot, v) stores the chunk, returns what to attend to
//   stats_request(layer)         which attention statistics the policy needs
//   observe(layer, stats)        hands them over (same attention pass)
// and end_chunk(n) once all layers are done. The model never asks a policy's name.
//
// Position schemes (DESIGN.md section 3):
//   Absolute  keys stored after RoPE at the absolute token index (the reference).
//   Cache     keys stored before RoPE; slot i is rotated at position i and the
//             chunk continues after the last slot, so positions stay below
//             M + buffer + B for any stream length.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "lococo/attention.h"
#include "lococo/config.h"

namespace lococo {

enum class PositionMode { Absolute, Cache };
PositionMode parse_position_mode(const std::string& s);  // "absolute" | "cache"
std::string to_string(PositionMode m);

// Options of every policy; each field is used only by the policies it names.
struct CacheOptions {
  std::string policy = "full";      // full|streaming|h2o|tova|snapkv|lococo-hh|lococo
  int64_t budget = 512;             // M: slots left after a compression (bounded policies)
  int64_t chunk = 512;              // B: largest chunk per forward, for preallocation
  int64_t buffer = 16;              // b: compress only when stored slots > M + b
  PositionMode positions = PositionMode::Absolute;
  int64_t sinks = 4;                // streaming: first tokens always kept
  int64_t recent = -1;              // h2o: most recent tokens kept; -1 means M / 2
  int64_t observation_window = 32;  // snapkv: last queries whose attention ranks slots
  int64_t pool_kernel = 7;          // snapkv: max-pool width over slot scores (odd)
  double keep_rate = 0.5;           // lococo: r, share of M kept verbatim
  int64_t local_window = 0;         // lococo: w, last slots always kept
  std::string compressor;           // lococo: compressor safetensors file
  bool allow_untrained = false;     // lococo: run with a freshly initialised compressor
  uint64_t seed = 0;                // lococo: seed of an untrained compressor
  torch::Dtype dtype = torch::kFloat32;  // storage dtype of keys and values (fp32 for bf16/f16 weights too)
  torch::Device device = torch::kCPU;
};

// Keys (rotated, ready for attention) and values to attend: [Hkv, S, d].
struct KeysValues {
  torch::Tensor keys;
  torch::Tensor values;
  // Set only by append(..., rotate_keys = false) with `Cache` positions: keys
  // are as stored, before RoPE, and slot i is to be rotated at position i.
  bool rotate_at_slot_index = false;
};

class KvCache {
 public:
  virtual ~KvCache() = default;

  virtual void prepare(int layer, int64_t n_new) = 0;
  virtual int64_t chunk_position(int layer) const = 0;
  // k_raw, k_rot, v: [Hkv, n_new, d]. Returns [Hkv, slots + n_new, d], views that
  // stay valid until the next append (of any layer). rotate_keys = false lets
  // a cache that stores keys before RoPE hand them over unrotated (see
  // KeysValues): decode_step rotates them inside its threaded attention
  // instead of having every slot rotated again, on one thread, every token.
  virtual KeysValues append(int layer, const torch::Tensor& k_raw, const torch::Tensor& k_rot,
                            const torch::Tensor& v, bool rotate_keys = true) = 0;
  virtual AttentionStatsRequest stats_request(int layer) const = 0;
  virtual void observe(int layer, const AttentionStats& stats) = 0;
  virtual void end_chunk(int64_t n_new) = 0;

  virtual int64_t slots(int layer) const = 0;     // slots stored now
  virtual int64_t capacity(int layer) const = 0;  // slots allocated now
  virtual int64_t bytes() const = 0;              // bytes of K/V storage allocated
  virtual int64_t tokens_seen() const = 0;
  virtual void reset() = 0;                       // forget the sequence, keep the buffers
  virtual std::string describe() const = 0;       // e.g. "h2o(M=128,b=16)"
};

// Builds the policy named by options.policy for a model of shape `config`.
// Throws std::invalid_argument for an unknown policy or bad option values.
std::unique_ptr<KvCache> make_cache(const ModelConfig& config, const CacheOptions& options);

// The names make_cache accepts.
const std::vector<std::string>& cache_policy_names();

// ---------------------------------------------------------------------------
// SlotCache: the storage every policy shares (preallocated per-layer buffers,
// in-place appends, gathers after eviction, RoPE positions). A policy says
// when to compress and what to keep; it never touches the buffers by hand.
class SlotCache : public KvCache {
 public:
  SlotCache(const ModelConfig& config, const CacheOptions& options, int64_t initial_capacity);

  int64_t chunk_position(int layer) const override;
  KeysValues append(int layer, const torch::Tensor& k_raw, const torch::Tensor& k_rot,
                    const torch::Tensor& v, bool rotate_keys = true) override;
  void end_chunk(int64_t n_new) override;
  int64_t slots(int layer) const override { return layers_[layer].len; }
  int64_t capacity(int layer) const override { return layers_[layer].k.size(1); }
  int64_t bytes() const override;
  int64_t tokens_seen() const override { return seen_; }
  void reset() override;

  // Every RoPE position handed out so far is below this (tests of `Cache` mode).
  int64_t max_position_used() const { return max_position_; }
  const CacheOptions& options() const { return options_; }

  // Read-only views of what is stored now (tests, diagnostics). Keys are raw in
  // `Cache` mode. [Hkv, len, d]; scores [Hkv, len] fp32; positions [Hkv, len]
  // int64 (absolute token index of each slot, -1 for a fused slot).
  KeysValues stored(int layer) const;
  torch::Tensor stored_scores(int layer) const;
  torch::Tensor stored_positions(int layer) const;

 protected:
  struct LayerSlots {
    torch::Tensor k, v;       // [Hkv, cap, d]: keys rotated (Absolute) or raw (Cache)
    torch::Tensor scores;     // [Hkv, cap] fp32, the policy's per-slot score
    torch::Tensor positions;  // [Hkv, cap] int64, absolute token index of each slot (-1: fused)
    int64_t len = 0;
    // In training, slots produced by a differentiable compression carry autograd
    // history for the current chunk only: [Hkv, len, d] or undefined.
    torch::Tensor live_k, live_v;
  };

  LayerSlots& layer(int i) { return layers_[i]; }
  const LayerSlots& layer(int i) const { return layers_[i]; }
  int num_layers() const { return static_cast<int>(layers_.size()); }

  // Keeps the slots `index` ([Hkv, n] int64 per KV head, or [n] shared by all
  // heads) in that order at the front of the buffers.
  void keep_slots(int layer, const torch::Tensor& index);
  // Replaces the stored slots by new ones ([Hkv, n, d]; scores [Hkv, n]). If the
  // keys carry autograd history they are used, undetached, by the next append.
  // positions [Hkv, n] (absolute index, -1 for a fused slot); undefined = all -1.
  void replace_slots(int layer, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& scores,
                     const torch::Tensor& positions = {});
  void ensure_capacity(int layer, int64_t needed);
  // One token's k and v ([Hkv, 1, d]) into slot `slot` of every head with a
  // zero score and position seen_, through pointers; false (nothing written)
  // unless everything is contiguous fp32 on the CPU, outside autograd.
  bool write_one_slot(LayerSlots& l, int64_t slot, const torch::Tensor& k, const torch::Tensor& v) const;
  // `Cache` mode: the first `len` stored keys of `layer` rotated at their slot
  // positions, written into a scratch buffer shared by the layers (valid until
  // the next append) with cos/sin tables kept from call to call, so decoding
  // allocates nothing between compressions.
  torch::Tensor rotated_slots(int layer, int64_t len);

  const ModelConfig config_;
  const CacheOptions options_;

 private:
  std::vector<LayerSlots> layers_;
  torch::Tensor rot_cos_, rot_sin_;   // [rows, d/2] RoPE tables at slot positions (Cache mode)
  torch::Tensor rotated_, rot_tmp_;   // [Hkv, rows, d], [Hkv, rows, d/2] scratch of rotated_slots()
  int64_t seen_ = 0;
  int64_t max_position_ = 0;
};

// ---------------------------------------------------------------------------
// BoundedCache: the trigger every bounded policy shares (DESIGN.md section 3).
// Compression is lazy: at the start of a chunk, on what is stored, only when
// strictly L > M + b, and it leaves exactly M slots; so the first chunk is never
// compressed. Buffers hold M + b + B slots up front and never grow while chunks
// are at most B tokens.
class BoundedCache : public SlotCache {
 public:
  // Throws std::invalid_argument for a non-positive budget or a negative buffer.
  BoundedCache(const ModelConfig& config, const CacheOptions& options);

  void prepare(int layer, int64_t n_new) final;

 protected:
  // Reduces the `slots(layer)` > M + b stored slots to exactly M (options_.budget).
  virtual void compress(int layer) = 0;
};

}  // namespace lococo
