// Internal to the engine: the storage every cache policy shares (SlotCache) and
// the compression trigger every bounded policy shares (BoundedCache). A policy
// says when to compress and what to keep; it never touches the buffers by hand.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include <torch/torch.h>

#include "lococo/kv/cache.h"
#include "lococo/ops/rope.h"

namespace lococo {

// Preallocated per-layer buffers, in-place appends, gathers after eviction,
// RoPE positions.
class SlotCache : public KvCache {
 public:
  SlotCache(const ModelConfig& config, const CacheOptions& options, int64_t initial_capacity);

  int num_layers() const override { return static_cast<int>(layers_.size()); }
  int64_t slots(int layer) const override { return layers_[layer].len; }
  int64_t capacity(int layer) const override { return layers_[layer].k.size(1); }
  int64_t bytes() const override;
  int64_t tokens_seen() const override { return seen_; }
  torch::ScalarType kv_dtype() const override { return options_.dtype; }
  bool can_append_unrotated() const override { return options_.positions == PositionMode::Cache; }
  void detach_history() override;

  // Every RoPE position handed out so far is below this (tests of `Cache` mode).
  int64_t max_position_used() const { return max_position_; }
  const CacheOptions& options() const { return options_; }

  KeysValues stored(int layer) const override;
  torch::Tensor stored_scores(int layer) const override;
  torch::Tensor stored_positions(int layer) const override;
  // Every layer's slots (keys, values, scores, positions) and the counters,
  // plus what a policy keeps beside them (add_policy_state).
  CacheSnapshot snapshot() const final;
  void restore(const CacheSnapshot& snapshot) final;

 protected:
  struct LayerSlots {
    torch::Tensor k, v;       // [Hkv, cap, d]: keys rotated (Absolute) or raw (Cache)
    torch::Tensor scores;     // [Hkv, cap] fp32, the policy's per-slot score
    torch::Tensor positions;  // [Hkv, cap] int64, absolute token index of each slot (-1: fused)
    int64_t len = 0;
    // In training, the stored slots with their autograd history (as stored:
    // raw keys in `Cache` mode), [Hkv, len, d], or undefined: set by a
    // differentiable compression, extended by the chunks that follow, and
    // dropped after options.bptt_chunks chunks (live_age counts them).
    torch::Tensor live_k, live_v;
    int64_t live_age = 0;
  };

  int64_t chunk_position(int layer) const override;
  KeysValues append(int layer, const torch::Tensor& k_raw, const torch::Tensor& k_rot,
                    const torch::Tensor& v) override;
  KeysValues append_unrotated(int layer, const torch::Tensor& k_raw, const torch::Tensor& k_rot,
                              const torch::Tensor& v) override;
  void end_chunk(int64_t n_new) override;
  void clear() override;

  LayerSlots& layer(int i) { return layers_[i]; }
  const LayerSlots& layer(int i) const { return layers_[i]; }

  // Keeps the slots `index` ([Hkv, n] int64 per KV head, or [n] shared by all
  // heads) in that order at the front of the buffers.
  void keep_slots(int layer, const torch::Tensor& index);
  // Replaces the stored slots by new ones ([Hkv, n, d]; scores [Hkv, n]). If the
  // keys carry autograd history they are used, undetached, by the next append.
  // positions [Hkv, n] (absolute index, -1 for a fused slot); undefined = all -1.
  void replace_slots(int layer, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& scores,
                     const torch::Tensor& positions = {});
  void ensure_capacity(int layer, int64_t needed);
  // The stored keys and values as a compression should read them: with their
  // autograd history in training (live), else the buffers. [Hkv, len, d].
  KeysValues compression_input(int layer) const;

  // Reads a snapshot's tensors by name, checking each one's shape, and
  // remembers which were read (restore refuses tensors nobody read).
  class SnapshotReader {
   public:
    explicit SnapshotReader(const CacheSnapshot& s);
    // `name` with exactly `sizes` as `type` (on `device`); std::invalid_argument otherwise.
    torch::Tensor take(const std::string& name, const std::vector<int64_t>& sizes, torch::ScalarType type,
                       torch::Device device);
    void expect_all_taken() const;

   private:
    std::map<std::string, torch::Tensor> tensors_;
    std::set<std::string> taken_;
  };
  // A policy's own sequence state beyond the slots (SnapKV's query window):
  // written into a snapshot after the slots, read back after them.
  virtual void add_policy_state(CacheSnapshot& s) const {}
  virtual void restore_policy_state(SnapshotReader& r) {}

  const ModelConfig config_;
  const CacheOptions options_;

 private:
  // Stores the chunk; returns the keys as stored (rotated or not) and values.
  KeysValues store(int layer, const torch::Tensor& k_raw, const torch::Tensor& k_rot, const torch::Tensor& v,
                   bool rotate);
  // One token's k and v ([Hkv, 1, d]) into slot `slot` of every head with a
  // zero score and position seen_, through pointers; false (nothing written)
  // unless everything is contiguous fp32 on the CPU, outside autograd.
  bool write_one_slot(LayerSlots& l, int64_t slot, const torch::Tensor& k, const torch::Tensor& v) const;
  // `Cache` mode: the first `len` stored keys of `layer` rotated at their slot
  // positions, written into a scratch buffer shared by the layers (valid until
  // the next append), so decoding allocates nothing between compressions.
  torch::Tensor rotated_slots(int layer, int64_t len);

  std::vector<LayerSlots> layers_;
  RopeTable rope_;
  torch::Tensor rotated_, rot_tmp_;   // [Hkv, rows, d], [Hkv, rows, d/2] scratch of rotated_slots()
  int64_t seen_ = 0;
  int64_t max_position_ = 0;
};

// M + b + B: the most a bounded policy ever stores (M after a compression plus a
// chunk, or at most M + b plus a chunk when none was due). std::invalid_argument
// naming the flag for a budget, buffer or chunk out of range.
int64_t bounded_capacity(const CacheOptions& o);

// Compression is lazy: at the start of a chunk, on what is stored, only when
// strictly L > M + b, and it leaves exactly M slots; so the first chunk is never
// compressed. Buffers hold M + b + B slots up front and never grow while chunks
// are at most B tokens (docs/DESIGN.md section 4).
class BoundedCache : public SlotCache {
 public:
  // Throws std::invalid_argument for a non-positive budget or a negative buffer.
  BoundedCache(const ModelConfig& config, const CacheOptions& options);

 protected:
  void prepare(int layer, int64_t n_new) final;
  // Reduces the `slots(layer)` > M + b stored slots to exactly M (options_.budget).
  virtual void compress(int layer) = 0;
  // Tokens of the chunk now going through the layers (set by prepare): the
  // last this many slots of a layer that appended are the chunk's own.
  int64_t chunk_tokens() const { return chunk_tokens_; }

 private:
  int64_t chunk_tokens_ = 0;
};

}  // namespace lococo
