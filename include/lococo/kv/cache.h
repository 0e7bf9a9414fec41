// The KV cache: one small interface, several policies behind it.
//
// Per-sequence state (keys, values, per-slot scores, how many tokens were seen)
// lives here, never in the model. The model talks to a cache one chunk at a
// time, through a CacheChunk, which owns the calling order:
//
//   CacheChunk chunk = cache.begin_chunk(n);   every layer prepared: a bounded
//                                              policy may compress here
//   for each layer i:
//     CacheChunk::Layer l = chunk.layer(i);
//     l.position()                             RoPE position of the chunk's first token
//     l.append(k_raw, k_rot, v)                stores the chunk, returns what to attend to
//     l.stats_request() / l.observe(stats)     the attention statistics the policy ranks by
//   chunk.end();                               once every layer has appended
//
// A chunk left unfinished by an exception marks the cache broken: it refuses
// further chunks until reset(). The model never asks a policy's name; policies
// are found through the registry (lococo/kv/registry.h).
//
// Position schemes (docs/DESIGN.md section 3):
//   Absolute  keys stored after RoPE at the absolute token index (the reference).
//   Cache     keys stored before RoPE; slot i is rotated at position i and the
//             chunk continues after the last slot, so positions stay below
//             M + buffer + B for any stream length.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "lococo/core/config.h"
#include "lococo/ops/attention.h"

namespace lococo {

enum class PositionMode { Absolute, Cache };
PositionMode parse_position_mode(const std::string& s);  // "absolute" | "cache"
std::string to_string(PositionMode m);

// Options of single policies (each used only by the policies named).
struct StreamingOptions {
  int64_t sinks = 4;  // first tokens always kept
};
struct H2oOptions {
  int64_t recent = -1;  // most recent tokens always kept; -1 means M / 2
};
struct SnapKvOptions {
  int64_t observation_window = 32;  // last queries whose attention ranks slots
  int64_t pool_kernel = 7;          // max-pool width over slot scores (odd)
};
struct LococoOptions {                // lococo and lococo-hh
  double keep_rate = 0.5;             // r: share of M kept verbatim
  int64_t local_window = 0;           // w: last slots always kept
  // Stored slots' scores are multiplied by this before a chunk's attention is
  // added: 0 overwrites them (the reference), 1 accumulates them (as H2O does).
  double score_decay = 0;
  // Learned retention ranks a slot by its score less retention_decay x its age
  // in thousands of tokens (scores are logs, so an exponential decay of the
  // attention it is expected to get): without it a token scored high long ago
  // outranks a good recent one forever. Except for up to retention_long_term
  // slots per KV head, the highest-scored of those scored at least
  // retention_protect, ranked above the rest by score alone, without aging: a
  // passkey's digits, scored far above text, live as long as the stream.
  // (Defaults measured on the bundled model: docs/DESIGN.md section 9.)
  double retention_decay = 8;
  double retention_protect = 2.5;
  int64_t retention_long_term = 16;
  // Order after a compression: false, [heavy hitters with the window last;
  // fused] (the reference); true, [heavy hitters; fused; window], so that under
  // `cache` positions the most recent slots sit next to the new chunk.
  bool window_last = false;
  // lococo: keep_rate / local_window are the compressor file's own (front ends
  // set these when the user gave no value; resolve_compressor applies them).
  bool keep_rate_from_file = false;
  bool local_window_from_file = false;
  std::string compressor;             // lococo: compressor safetensors file ("" = the model's own)
  bool allow_untrained = false;       // lococo: run with a freshly initialised compressor
  uint64_t seed = 0;                  // lococo: seed of an untrained compressor
};

// Options of every policy: the common fields, then one struct per policy.
struct CacheOptions {
  std::string policy = "full";  // a name from cache_policy_names() (the registry's reference_policy())
  int64_t budget = 512;         // M: slots left after a compression (bounded policies)
  int64_t chunk = 512;          // B: largest chunk per forward, for preallocation
  int64_t buffer = 16;          // b: compress only when stored slots > M + b
  PositionMode positions = PositionMode::Absolute;
  torch::Dtype dtype = torch::kFloat32;  // storage dtype of keys and values (fp32 for bf16/f16 weights too)
  torch::Device device = torch::kCPU;
  // Training: chunks through which stored slots keep their autograd history,
  // so that a loss reaches the compressions of that many chunks back (1: only
  // the compression just before the chunk, the reference's truncated backprop).
  int64_t bptt_chunks = 1;
  StreamingOptions streaming;
  H2oOptions h2o;
  SnapKvOptions snapkv;
  LococoOptions lococo;
};

// Keys (rotated, ready for attention) and values to attend: [Hkv, S, d].
struct KeysValues {
  torch::Tensor keys;
  torch::Tensor values;
  // Set only by append_unrotated(): keys are as stored, before RoPE, and slot
  // i is to be rotated at position i by the caller.
  bool rotate_at_slot_index = false;
  // Training only: [Hkv, S] added to every query's logit of each slot
  // (attention_plain's key_bias), or undefined.
  torch::Tensor key_bias;
};

// A cache's sequence state, enough to continue the sequence exactly in a cache
// made with the same options (saved states: lococo/generate/saved_state.h).
struct CacheSnapshot {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;  // CPU copies: "layers.<i>.keys", ...
  nlohmann::json counters;                                      // {"tokens_seen": n, ...}
};

class CacheChunk;

class KvCache {
 public:
  virtual ~KvCache() = default;

  // Starts a chunk of n_new tokens (see the protocol above). Throws
  // std::logic_error if another chunk is open or the cache is broken.
  CacheChunk begin_chunk(int64_t n_new);

  virtual int num_layers() const = 0;
  virtual int64_t slots(int layer) const = 0;     // slots stored now
  virtual int64_t capacity(int layer) const = 0;  // slots allocated now
  virtual int64_t bytes() const = 0;              // bytes of K/V storage allocated
  virtual int64_t tokens_seen() const = 0;
  virtual torch::ScalarType kv_dtype() const = 0;  // dtype keys and values are stored in
  virtual std::string describe() const = 0;       // e.g. "h2o(M=128,b=16)"

  // Read-only views of what `layer` stores now (bindings, diagnostics, tests):
  // keys and values [Hkv, slots, d] (keys before RoPE under `Cache` positions,
  // after it under `Absolute`); scores [Hkv, slots] fp32, the policy's per-slot
  // score; positions [Hkv, slots] int64, each slot's token index (-1: fused).
  virtual KeysValues stored(int layer) const = 0;
  virtual torch::Tensor stored_scores(int layer) const = 0;
  virtual torch::Tensor stored_positions(int layer) const = 0;

  // The sequence state (copies), and back: restore() replaces the sequence by a
  // snapshot of a cache made with the same options, or throws
  // std::invalid_argument naming a missing, misshapen or unexpected tensor or
  // counter (the cache is then reset).
  virtual CacheSnapshot snapshot() const = 0;
  virtual void restore(const CacheSnapshot& snapshot) = 0;
  // Forgets the sequence (and a broken chunk), keeps the buffers.
  void reset();
  // Training: drops the autograd history stored slots carry (bptt_chunks > 1),
  // e.g. after an optimiser step changed the parameters that history used.
  virtual void detach_history() {}
  bool broken() const { return broken_; }

  // Capability: the cache stores keys before RoPE and can hand them over
  // unrotated (CacheChunk::Layer::append_unrotated), so that a caller that
  // rotates inside its own attention kernel (decode_step) need not have every
  // slot rotated here first.
  virtual bool can_append_unrotated() const { return false; }

 protected:
  friend class CacheChunk;
  // The protocol's steps, called only by CacheChunk, in its order.
  virtual void prepare(int layer, int64_t n_new) = 0;
  virtual int64_t chunk_position(int layer) const = 0;
  // k_raw, k_rot, v: [Hkv, n_new, d]. Returns [Hkv, slots + n_new, d], views that
  // stay valid until the next append (of any layer).
  virtual KeysValues append(int layer, const torch::Tensor& k_raw, const torch::Tensor& k_rot,
                            const torch::Tensor& v) = 0;
  virtual KeysValues append_unrotated(int layer, const torch::Tensor& k_raw, const torch::Tensor& k_rot,
                                      const torch::Tensor& v);
  virtual AttentionStatsRequest stats_request(int layer) const = 0;
  virtual void observe(int layer, const AttentionStats& stats) = 0;
  virtual void end_chunk(int64_t n_new) = 0;
  virtual void clear() = 0;  // reset()'s work on the stored slots

 private:
  bool chunk_open_ = false;
  bool broken_ = false;
};

// One chunk of tokens going through every layer of a cache (the protocol above).
class CacheChunk {
 public:
  class Layer {
   public:
    int64_t position() const { return chunk_->cache_->chunk_position(index_); }
    KeysValues append(const torch::Tensor& k_raw, const torch::Tensor& k_rot, const torch::Tensor& v);
    // Only where cache.can_append_unrotated(): keys come back before RoPE.
    KeysValues append_unrotated(const torch::Tensor& k_raw, const torch::Tensor& k_rot, const torch::Tensor& v);
    AttentionStatsRequest stats_request() const { return chunk_->cache_->stats_request(index_); }
    // Hands over the statistics asked for; nothing happens when none were asked.
    void observe(const AttentionStats& stats);

   private:
    friend class CacheChunk;
    Layer(CacheChunk* chunk, int index) : chunk_(chunk), index_(index) {}
    void mark_appended();
    CacheChunk* chunk_;
    int index_;
  };

  CacheChunk(CacheChunk&& other) noexcept;
  CacheChunk(const CacheChunk&) = delete;
  CacheChunk& operator=(const CacheChunk&) = delete;
  CacheChunk& operator=(CacheChunk&&) = delete;
  // Unfinished (an exception on the way): marks the cache broken.
  ~CacheChunk();

  Layer layer(int i);
  int64_t size() const { return n_new_; }
  // Closes the chunk; std::logic_error unless every layer appended once.
  void end();

 private:
  friend class KvCache;
  CacheChunk(KvCache* cache, int64_t n_new, int num_layers);
  KvCache* cache_;
  int64_t n_new_;
  std::vector<bool> appended_;  // [layers]
};

// Builds the policy named by options.policy for a model of shape `config`.
// Throws std::invalid_argument for an unknown policy or bad option values.
std::unique_ptr<KvCache> make_cache(const ModelConfig& config, const CacheOptions& options);

// The names make_cache accepts.
const std::vector<std::string>& cache_policy_names();

}  // namespace lococo
