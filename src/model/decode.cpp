#include "lococo/model/decode.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>

#include "ops/gemv.h"
#include "lococo/ops/layer_math.h"
#include "lococo/ops/rope.h"
#include "core/thread_team.h"

namespace lococo {
namespace {

constexpr int64_t kAttentionBlock = 512;  // slots per block: 128 KiB of keys at d = 64

torch::Tensor f32(int64_t n) { return torch::zeros({n}, torch::kFloat32); }

// ---- blocks of rows that team members claim ----
// 16 rows: whole cache lines of the output, so no two threads write one line,
// and 64-176 KiB of weights per block on the 1B shape, long enough runs for
// the prefetchers and short enough that members finish a matrix together.
constexpr int64_t kBlockRows = 16;

int64_t row_blocks(const torch::Tensor& w) { return (w.size(0) + kBlockRows - 1) / kBlockRows; }

// Rows [r0, r1) of block b.
std::pair<int64_t, int64_t> block_rows(const torch::Tensor& w, int64_t b) {
  return {b * kBlockRows, std::min(w.size(0), (b + 1) * kBlockRows)};
}

// Rows [r0, r1) of x rounded to bf16 into the same rows of out: the form in
// which products with bf16 weights read x (gemv.h).
void round_rows(const float* x, uint16_t* out, std::pair<int64_t, int64_t> rows) {
  round_to_bf16(x + rows.first, rows.second - rows.first, out + rows.first);
}

// Rows `rows` of out = W x + bias, written straight into `out`.
void project_rows(const Linear& l, const GemvInput& x, float* out, std::pair<int64_t, int64_t> rows) {
  gemv_row_range(l.weight, x, out, rows.first, rows.second);
  if (l.bias.defined())
    with_elements(l.bias, [&](const auto* b) {
      for (int64_t r = rows.first; r < rows.second; ++r) out[r] += static_cast<float>(b[r]);
    });
}

// The products of one team step, block by block: every member claims blocks
// of the first product's rows, then of the second's, ... and calls
// after(rows) on each block it computed (elementwise work on those rows,
// which then needs no barrier of its own).
struct Projection {
  const Linear& l;
  GemvInput x;  // [cols]
  float* out;   // [rows]
};
template <class After>
void project_blocks(TeamMember& t, std::initializer_list<Projection> ps, After&& after) {
  int64_t total = 0;
  for (const Projection& p : ps) total += row_blocks(p.l.weight);
  t.for_each_block(total, [&](int64_t b) {
    for (const Projection& p : ps) {
      if (b < row_blocks(p.l.weight)) {
        const auto rows = block_rows(p.l.weight, b);
        project_rows(p.l, p.x, p.out, rows);
        return after(rows);
      }
      b -= row_blocks(p.l.weight);
    }
  });
}
void project_blocks(TeamMember& t, std::initializer_list<Projection> ps) {
  project_blocks(t, ps, [](std::pair<int64_t, int64_t>) {});
}

bool rows_contiguous(const KeysValues& kv) { return kv.keys.stride(2) == 1 && kv.values.stride(2) == 1; }

// attn and probs as attend_heads() below, by libtorch's batched products: for
// caches whose rows are not contiguous.
void attend_batched(const KeysValues& kv, const ModelConfig& c, const float* q, int64_t G, const torch::Tensor& probs,
                    float* attn) {
  const int64_t Hkv = kv.keys.size(0), S = kv.keys.size(1), d = kv.keys.size(2);
  torch::Tensor scores = probs;
  const torch::Tensor keys = kv.rotate_at_slot_index ? RopeTable(c).rotate(kv.keys, 0) : kv.keys;
  at::bmm_out(scores, torch::from_blob(const_cast<float*>(q), {Hkv, G, d}), keys.transpose(1, 2));
  softmax_rows(probs.data_ptr<float>(), Hkv * G, S, static_cast<float>(1.0 / std::sqrt(static_cast<double>(d))));
  auto out = torch::from_blob(attn, {Hkv, G, d});
  at::bmm_out(out, probs, kv.values);
}

// Keys that decode_step rotates itself (`Cache` positions): the angles of
// slots 0..S-1 ([S, d/2] each) and the member's scratch for a rotated block.
struct SlotRotation {
  const float* cos = nullptr;  // nullptr: the keys are rotated already
  const float* sin = nullptr;
  float* block = nullptr;      // [kAttentionBlock, d]
};

// attn [Hkv * G * d] = softmax(q K^T / sqrt(d)) V for the G query heads
// (q [Hkv * G * d]) of KV head h against its S cached slots; probs [Hkv, G, S]
// keeps the probabilities. K and V are read in blocks of slots that stay in
// cache while all G queries use them, so each is read from memory once (and
// keys stored before RoPE are rotated once per block, into rot.block).
void attend_head(const KeysValues& kv, const SlotRotation& rot, const float* q, int64_t G, const torch::Tensor& probs,
                 float* attn, int64_t h) {
  const int64_t S = kv.keys.size(1), d = kv.keys.size(2);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  constexpr int64_t kBlock = kAttentionBlock;
  const int64_t k_ld = kv.keys.stride(1), v_ld = kv.values.stride(1);
  const float* k = kv.keys.data_ptr<float>() + h * kv.keys.stride(0);
  const float* v = kv.values.data_ptr<float>() + h * kv.values.stride(0);
  float* ph = probs.data_ptr<float>() + h * G * S;  // [G, S]
  for (int64_t b = 0; b < S; b += kBlock) {
    const int64_t n = std::min(kBlock, S - b);
    const float* kb = k + b * k_ld;
    int64_t kb_ld = k_ld;
    if (rot.cos) {
      rope_rows(kb, n, d, k_ld, rot.cos + b * (d / 2), rot.sin + b * (d / 2), rot.block);
      kb = rot.block;
      kb_ld = d;
    }
    for (int64_t g = 0; g < G; ++g) dot_rows(kb, n, d, kb_ld, q + (h * G + g) * d, ph + g * S + b);
  }
  softmax_rows(ph, G, S, scale);
  float* out = attn + h * G * d;  // [G, d]
  std::fill(out, out + G * d, 0.0f);
  for (int64_t b = 0; b < S; b += kBlock)
    for (int64_t g = 0; g < G; ++g)
      add_weighted_rows(v + b * v_ld, std::min(kBlock, S - b), d, v_ld, ph + g * S + b, out + g * d);
}

// The KV heads of the attention that the member takes (all of it on the
// leader when the rows are not contiguous), and their output in bf16 too.
void attend(TeamMember& t, const KeysValues& kv, const SlotRotation& rot, const ModelConfig& c, const float* q,
            int64_t G, const torch::Tensor& probs, float* attn, uint16_t* attn_bf16) {
  const int64_t Hkv = kv.keys.size(0), width = G * kv.keys.size(2);  // width: one KV head's output
  if (!rows_contiguous(kv)) {
    if (t.leader()) {
      attend_batched(kv, c, q, G, probs, attn);
      round_rows(attn, attn_bf16, {0, Hkv * width});
    }
    return;
  }
  t.for_each_block(Hkv, [&](int64_t h) {
    attend_head(kv, rot, q, G, probs, attn, h);
    round_rows(attn, attn_bf16, {h * width, (h + 1) * width});
  });
}

// x[r] += y[r] for r in [r0, r1).
void add_rows(float* x, const float* y, std::pair<int64_t, int64_t> rows) {
  for (int64_t r = rows.first; r < rows.second; ++r) x[r] += y[r];
}

}  // namespace

DecodeState::DecodeState(const ModelConfig& c)
    : heads_(c.num_heads),
      kv_heads_(c.num_kv_heads),
      x_(f32(c.hidden_size)),
      normed_(f32(c.hidden_size)),
      q_(f32(c.num_heads * c.head_dim)),
      k_raw_(f32(c.num_kv_heads * c.head_dim)),
      k_rot_(f32(c.num_kv_heads * c.head_dim)),
      v_(f32(c.num_kv_heads * c.head_dim)),
      attn_(f32(c.num_heads * c.head_dim)),
      out_(f32(c.hidden_size)),
      gate_(f32(c.intermediate_size)),
      up_(f32(c.intermediate_size)),
      logits_(f32(c.vocab_size)),
      normed_bf16_(static_cast<size_t>(c.hidden_size)),
      attn_bf16_(static_cast<size_t>(c.num_heads * c.head_dim)),
      gate_bf16_(static_cast<size_t>(c.intermediate_size)),
      rope_(c),
      cos_(c.head_dim / 2),
      sin_(c.head_dim / 2) {
  k_raw_3d_ = k_raw_.view({kv_heads_, 1, c.head_dim});
  k_rot_3d_ = k_rot_.view({kv_heads_, 1, c.head_dim});
  v_3d_ = v_.view({kv_heads_, 1, c.head_dim});
  scores_for(1024);
}

torch::Tensor DecodeState::scores_for(int64_t slots) {
  if (!scores_.defined() || scores_.numel() < heads_ * slots) {
    const int64_t cap = std::max<int64_t>(slots, scores_.defined() ? 2 * scores_.numel() / heads_ : 0);
    scores_ = f32(heads_ * cap);
    colsum_ = f32(kv_heads_ * cap);
  }
  return scores_;
}

void DecodeState::key_blocks_for(int members) {
  const int64_t d = 2 * rope_.half();
  if (!key_blocks_.defined() || key_blocks_.size(0) < members) key_blocks_ = torch::empty({members, kAttentionBlock, d});
}

float* DecodeState::key_block(int member) {
  return key_blocks_.data_ptr<float>() + member * key_blocks_.size(1) * key_blocks_.size(2);
}

bool decode_step_supported(const LlamaModel& model) {
  const LlamaWeights& w = model.weights();
  const auto ok = [](const torch::Tensor& t) {
    return t.device().is_cpu() && (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16);
  };
  if (!ok(w.embed) || !gemv_supported(w.lm_head) || !ok(w.final_norm)) return false;
  for (const auto& l : w.layers) {
    if (!ok(l.attn_norm) || !ok(l.mlp_norm)) return false;
    for (const Linear* lin : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
      if (lin->lora_a.defined() || !gemv_supported(lin->weight) || (lin->bias.defined() && !ok(lin->bias)))
        return false;
  }
  return true;
}

// decode_step's serial steps, which read and write DecodeState's buffers.
struct DecodeSteps {
  // normed = RMSNorm(x) with `weight`, in fp32 and in bf16 (what products read).
  static void normalize(const torch::Tensor& weight, double eps, DecodeState& s) {
    rms_norm_into(s.x_, weight, eps, s.normed_);
    round_to_bf16(s.normed_.data_ptr<float>(), s.normed_.numel(), s.normed_bf16_.data());
  }

  // The part of a token's step that one layer's cache does (leader only): RoPE
  // on q and k at the cache's position, the append, and the probability buffer
  // for the S slots it returns.
  static KeysValues rotate_and_append(CacheChunk::Layer layer, int64_t capacity, const ModelConfig& c,
                                      DecodeState& s, torch::Tensor& probs) {
    const int64_t Hkv = c.num_kv_heads, d = c.head_dim;
    s.rope_.angles_at(static_cast<double>(layer.position()), s.cos_.data(), s.sin_.data());
    RopeTable::rotate_in_place(s.q_.data_ptr<float>(), c.num_heads, d, s.cos_.data(), s.sin_.data());
    std::memcpy(s.k_rot_.data_ptr<float>(), s.k_raw_.data_ptr<float>(), Hkv * d * sizeof(float));
    RopeTable::rotate_in_place(s.k_rot_.data_ptr<float>(), Hkv, d, s.cos_.data(), s.sin_.data());
    KeysValues kv = s.unrotated_ ? layer.append_unrotated(s.k_raw_3d_, s.k_rot_3d_, s.v_3d_)
                                 : layer.append(s.k_raw_3d_, s.k_rot_3d_, s.v_3d_);
    const int64_t S = kv.keys.size(1);
    if (kv.rotate_at_slot_index) {
      s.slot_cos_ = s.rope_.slot_cos(std::max(S, capacity));  // all the cache can hold
      s.slot_sin_ = s.rope_.slot_sin(std::max(S, capacity));
    }
    probs = s.scores_for(S).narrow(0, 0, c.num_heads * S).view({Hkv, c.num_heads / Hkv, S});  // [Hkv, G, S]
    return kv;
  }

  // Hands the layer's attention statistics to the cache when it asks for them.
  static void observe_attention(CacheChunk::Layer layer, DecodeState& s, const torch::Tensor& probs) {
    const AttentionStatsRequest request = layer.stats_request();
    if (!request.any()) return;
    const int64_t Hkv = probs.size(0), S = probs.size(2);
    auto colsum = s.colsum_.narrow(0, 0, Hkv * S).view({Hkv, S});  // [Hkv, S]
    at::sum_out(colsum, probs, {1});
    layer.observe(single_query_stats(request, colsum));
  }
};

const torch::Tensor& decode_step(const LlamaModel& model, KvCache& cache, int64_t token, DecodeState& s) {
  const ModelConfig& c = model.config();
  const LlamaWeights& w = model.weights();
  if (token < 0 || token >= c.vocab_size)
    throw std::invalid_argument("decode_step: token id " + std::to_string(token) + " outside the vocabulary [0, " +
                                std::to_string(c.vocab_size) + ")");
  if (cache.kv_dtype() != torch::kFloat32)
    throw std::invalid_argument(std::string("decode_step: the cache stores ") + c10::toString(cache.kv_dtype()) +
                                " keys; decoding needs an fp32 cache (CacheOptions::dtype)");
  torch::NoGradGuard no_grad;
  s.x_.copy_(w.embed[token]);
  s.unrotated_ = cache.can_append_unrotated();
  // Compressions (when a bounded cache is full) run here, before the team, on
  // all the intra-op threads.
  CacheChunk chunk = cache.begin_chunk(1);
  float* x = s.x_.data_ptr<float>();            // [D]
  float* q = s.q_.data_ptr<float>();            // [Hq * d]
  float* k = s.k_raw_.data_ptr<float>();        // [Hkv * d]
  float* v = s.v_.data_ptr<float>();            // [Hkv * d]
  float* attn = s.attn_.data_ptr<float>();      // [Hq * d]
  float* out = s.out_.data_ptr<float>();        // [D]
  float* gate = s.gate_.data_ptr<float>();      // [F]
  float* up = s.up_.data_ptr<float>();          // [F]
  // The products' inputs, fp32 and rounded to bf16 (gemv.h).
  const GemvInput normed{s.normed_.data_ptr<float>(), s.normed_bf16_.data()};  // [D]
  const GemvInput attn_in{attn, s.attn_bf16_.data()};                           // [Hq * d]
  const GemvInput gate_in{gate, s.gate_bf16_.data()};                           // [F]
  const int64_t G = c.num_heads / c.num_kv_heads;
  const int threads = at::get_num_threads();
  s.key_blocks_for(std::min(threads, Team::kMaxMembers));
  KeysValues kv;        // the current layer's keys and values (set by the leader)
  torch::Tensor probs;  // [Hkv, G, S] its attention probabilities
  // One team run per token; every step after a sync() sees what all members
  // wrote before it. Serial steps run on the leader, the calling thread.
  run_team(threads, [&](TeamMember& t) {
    for (int i = 0; i < c.num_layers; ++i) {
      const LayerWeights& l = w.layers[i];
      // ---- attention: q, k, v of the token; RoPE at the cache's position ----
      if (!t.leader_then_sync([&] { DecodeSteps::normalize(l.attn_norm, c.rms_norm_eps, s); })) return;
      project_blocks(t, {{l.q, normed, q}, {l.k, normed, k}, {l.v, normed, v}});
      if (!t.sync() || !t.leader_then_sync([&] { kv = DecodeSteps::rotate_and_append(chunk.layer(i), cache.capacity(i), c, s, probs); })) return;
      // ---- the G query heads of each KV head attend to its S slots ----
      SlotRotation rot;
      if (kv.rotate_at_slot_index)
        rot = {s.slot_cos_.data_ptr<float>(), s.slot_sin_.data_ptr<float>(), s.key_block(t.index())};
      attend(t, kv, rot, c, q, G, probs, attn, s.attn_bf16_.data());
      if (!t.sync()) return;
      project_blocks(t, {{l.o, attn_in, out}}, [&](auto rows) { add_rows(x, out, rows); });
      if (!t.sync()) return;
      // ---- SwiGLU MLP ----
      if (!t.leader_then_sync([&] {
            DecodeSteps::observe_attention(chunk.layer(i), s, probs);
            DecodeSteps::normalize(l.mlp_norm, c.rms_norm_eps, s);
          }))
        return;
      // A block: the same rows of gate and up, and their SwiGLU.
      t.for_each_block(row_blocks(l.gate.weight), [&](int64_t b) {
        const auto rows = block_rows(l.gate.weight, b);
        project_rows(l.gate, normed, gate, rows);
        project_rows(l.up, normed, up, rows);
        swiglu_rows(gate, up, rows);
        round_rows(gate, s.gate_bf16_.data(), rows);
      });
      if (!t.sync()) return;
      project_blocks(t, {{l.down, gate_in, out}}, [&](auto rows) { add_rows(x, out, rows); });
      if (!t.sync()) return;
    }
    if (!t.leader_then_sync([&] { DecodeSteps::normalize(w.final_norm, c.rms_norm_eps, s); })) return;
    t.for_each_block(row_blocks(w.lm_head), [&](int64_t b) {
      const auto [r0, r1] = block_rows(w.lm_head, b);
      gemv_row_range(w.lm_head, normed, s.logits_.data_ptr<float>(), r0, r1);
    });
  });
  chunk.end();
  return s.logits_;
}

}  // namespace lococo
