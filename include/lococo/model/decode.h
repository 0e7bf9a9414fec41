// Single-token decoding without tensor allocations.
//
// LlamaModel::forward() builds every activation as a fresh tensor: fine for a
// chunk of hundreds of tokens, but for one token the ~100 allocations per
// layer cost as much as the arithmetic of a small model. decode_step() runs the
// same computation into buffers that a DecodeState allocates once per
// sequence: projections as matrix-vector products written in place (src/ops/gemv.h's
// kernels, which stream fp32 and bf16 weights), RMSNorm, RoPE, softmax and
// SwiGLU as short loops over those buffers, attention by gemv.h's row kernels
// over the cache's own storage.
//
// Threads: a token is one run of a thread team (src/core/thread_team.h). Every member
// computes its share of each matrix's rows (and the residual and SwiGLU of
// those rows), its share of the KV heads in attention; the steps that need
// all of a vector (RMSNorm, RoPE, the cache's append and statistics) run on
// the leader between barriers. Compressions run before the team, on all the
// intra-op threads.
//
// It applies to fp32 and bf16 contiguous CPU weights without LoRA
// (decode_step_supported()) and an fp32 cache; generate() uses it there and
// forward() elsewhere. Activations stay fp32 with either weight dtype, except
// that products with bf16 weights read their input vector rounded to bf16
// (gemv.h; sums in fp32). The logits equal forward()'s within float rounding
// for fp32 weights (tests/model/decode_test.cpp); for bf16 weights they are closer
// to the fp32 model's than forward()'s bf16 arithmetic is.
//
// What still allocates: a cache that compresses (bounded policies every
// `buffer` tokens) and one that asks for attention statistics (its bookkeeping
// uses libtorch ops). Keys stored before RoPE (--positions cache) are rotated
// inside the attention, a block of slots at a time, into per-member scratch.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "lococo/kv/cache.h"
#include "lococo/model/model.h"
#include "lococo/ops/rope.h"

namespace lococo {

// The per-sequence buffers of decode_step (fp32).
class DecodeState {
 public:
  explicit DecodeState(const ModelConfig& config);

  // Logits of the last decode_step: [V].
  const torch::Tensor& logits() const { return logits_; }

 private:
  friend const torch::Tensor& decode_step(const LlamaModel&, KvCache&, int64_t, DecodeState&);
  friend struct DecodeSteps;  // decode_step's serial steps (decode.cpp)
  torch::Tensor scores_for(int64_t slots);  // [Hq * slots] (grows by doubling, rarely)
  float* key_block(int member);             // member's scratch rows (key_blocks_ sized by key_blocks_for)
  void key_blocks_for(int members);         // (grows, rarely)

  int64_t heads_, kv_heads_;  // Hq, Hkv

  torch::Tensor x_;        // [D] residual stream
  torch::Tensor normed_;   // [D] RMSNorm output
  torch::Tensor q_;        // [Hq * d] queries (rotated in place)
  torch::Tensor k_raw_;    // [Hkv * d] keys before RoPE
  torch::Tensor k_rot_;    // [Hkv * d] keys after RoPE
  torch::Tensor v_;        // [Hkv * d] values
  torch::Tensor k_raw_3d_, k_rot_3d_, v_3d_;  // [Hkv, 1, d] views of the three above, as append() takes them
  torch::Tensor attn_;     // [Hq * d] attention output
  torch::Tensor out_;      // [D] o_proj / down_proj output
  torch::Tensor gate_;     // [F] gate_proj output, then silu(gate) * up
  torch::Tensor up_;       // [F] up_proj output
  torch::Tensor scores_;   // [Hq * capacity] attention probabilities
  torch::Tensor colsum_;   // [Hkv * capacity] probabilities summed over each KV head's queries
  torch::Tensor logits_;   // [V]
  // The inputs of the matrix products rounded to bf16, as bf16 weights read them (gemv.h).
  std::vector<uint16_t> normed_bf16_;  // [D]
  std::vector<uint16_t> attn_bf16_;    // [Hq * d]
  std::vector<uint16_t> gate_bf16_;    // [F]
  RopeTable rope_;
  std::vector<float> cos_, sin_;       // [d / 2] at the current position
  // Keys stored before RoPE (`Cache` positions) are rotated inside attention,
  // slot i at position i, a block of slots at a time per team member.
  bool unrotated_ = false;              // the cache hands keys over before RoPE (KvCache::can_append_unrotated)
  torch::Tensor slot_cos_, slot_sin_;  // [capacity, d / 2] angles of positions 0, 1, ... (rope_'s slot table)
  torch::Tensor key_blocks_;           // [members, kAttentionBlock, d] rotated keys
};

// True when decode_step can run this model (fp32 or bf16 CPU weights, no LoRA).
bool decode_step_supported(const LlamaModel& model);

// Feeds one token at the end of the cached sequence; returns the next-token
// logits [V] (a view of state's buffer, valid until the next call).
const torch::Tensor& decode_step(const LlamaModel& model, KvCache& cache, int64_t token, DecodeState& state);

}  // namespace lococo
