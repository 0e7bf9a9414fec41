#include "lococo/decode.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include <ATen/Parallel.h>

#include "lococo/gemv.h"
#include "lococo/rope.h"

namespace lococo {
namespace {

torch::Tensor f32(int64_t n) { return torch::zeros({n}, torch::kFloat32); }

// Calls f with a typed pointer to t's elements: float, or at::BFloat16 (which
// reads as float) for bf16 models' norm weights and biases.
template <class F>
void with_elements(const torch::Tensor& t, F&& f) {
  if (t.scalar_type() == torch::kBFloat16) return f(t.data_ptr<at::BFloat16>());
  f(t.data_ptr<float>());
}

// out = x / sqrt(mean(x^2) + eps) * weight, as rms_norm() does in fp32.
void rms_norm_into(const torch::Tensor& x, const torch::Tensor& weight, double eps, const torch::Tensor& out) {
  const int64_t n = x.numel();
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(xp[i]) * xp[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(sum / n + eps));
  with_elements(weight, [&](const auto* wp) {
    for (int64_t i = 0; i < n; ++i) op[i] = xp[i] * inv * static_cast<float>(wp[i]);
  });
}

// out = W x, written straight into `out`, by the kernel matvec_kernel() picks
// for W (gemv.h). For BLAS (LOCOCO_MATVEC=blas): addmv with beta = 0 rather than mv_out, which on
// this libtorch allocates a temporary per call (measured with
// tests/alloc_counter.h); beta = 0 ignores out's old contents, NaN included.
void matvec_into(const torch::Tensor& out, const torch::Tensor& w, const torch::Tensor& x) {
  if (matvec_kernel(w) == MatvecKernel::Simd) return gemv(w, x.data_ptr<float>(), out.data_ptr<float>());
  torch::Tensor o = out;
  at::addmv_out(o, out, w, x, /*beta=*/0, /*alpha=*/1);
}

void project_into(const Linear& l, const torch::Tensor& x, const torch::Tensor& out) {
  matvec_into(out, l.weight, x);
  if (!l.bias.defined()) return;
  float* op = out.data_ptr<float>();
  with_elements(l.bias, [&](const auto* b) {
    for (int64_t i = 0; i < out.numel(); ++i) op[i] += static_cast<float>(b[i]);
  });
}

// Rotates each of the `heads` vectors of `x` ([heads * d]) in place: the
// first and second halves are the pairs, as apply_rope() does.
void rope_in_place(float* x, int64_t heads, int64_t d, const std::vector<float>& cos, const std::vector<float>& sin) {
  const int64_t half = d / 2;
  for (int64_t h = 0; h < heads; ++h, x += d)
    for (int64_t j = 0; j < half; ++j) {
      const float a = x[j], b = x[j + half];
      x[j] = a * cos[j] - b * sin[j];
      x[j + half] = b * cos[j] + a * sin[j];
    }
}

// Each of `rows` rows of `n` scores becomes softmax(row * scale).
void softmax_rows(float* s, int64_t rows, int64_t n, float scale) {
  for (int64_t r = 0; r < rows; ++r, s += n) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, s[j] * scale);
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] * scale - mx));
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t j = 0; j < n; ++j) s[j] *= inv;
  }
}

// attn [Hkv * G * d] = softmax(q K^T / sqrt(d)) V for the G query heads
// (q [Hkv * G * d]) of each KV head against its S cached slots; probs
// [Hkv, G, S] keeps the probabilities. KV heads are split across the intra-op
// threads; K and V are read in blocks of slots that stay in cache while all
// G queries use them, so each is read from memory once.
void attend(const KeysValues& kv, const float* q, int64_t G, const torch::Tensor& probs, float* attn) {
  const int64_t Hkv = kv.keys.size(0), S = kv.keys.size(1), d = kv.keys.size(2);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  if (kv.keys.stride(2) != 1 || kv.values.stride(2) != 1) {  // rows not contiguous: libtorch's batched products
    torch::Tensor scores = probs;
    at::bmm_out(scores, torch::from_blob(const_cast<float*>(q), {Hkv, G, d}), kv.keys.transpose(1, 2));
    softmax_rows(probs.data_ptr<float>(), Hkv * G, S, scale);
    auto out = torch::from_blob(attn, {Hkv, G, d});
    at::bmm_out(out, probs, kv.values);
    return;
  }
  constexpr int64_t kBlock = 512;  // slots per block: 128 KiB of keys at d = 64
  const float* keys = kv.keys.data_ptr<float>();
  const float* values = kv.values.data_ptr<float>();
  float* p = probs.data_ptr<float>();
  at::parallel_for(0, Hkv, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const float* k = keys + h * kv.keys.stride(0);
      const float* v = values + h * kv.values.stride(0);
      float* ph = p + h * G * S;  // [G, S]
      for (int64_t b = 0; b < S; b += kBlock)
        for (int64_t g = 0; g < G; ++g)
          dot_rows(k + b * kv.keys.stride(1), std::min(kBlock, S - b), d, kv.keys.stride(1), q + (h * G + g) * d,
                   ph + g * S + b);
      softmax_rows(ph, G, S, scale);
      float* out = attn + h * G * d;  // [G, d]
      std::fill(out, out + G * d, 0.0f);
      for (int64_t b = 0; b < S; b += kBlock)
        for (int64_t g = 0; g < G; ++g)
          add_weighted_rows(v + b * kv.values.stride(1), std::min(kBlock, S - b), d, kv.values.stride(1), ph + g * S + b,
                            out + g * d);
    }
  });
}

// gate = silu(gate) * up, in place.
void swiglu_in_place(const torch::Tensor& gate, const torch::Tensor& up) {
  float* g = gate.data_ptr<float>();
  const float* u = up.data_ptr<float>();
  for (int64_t i = 0; i < gate.numel(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void add_in_place(const torch::Tensor& x, const torch::Tensor& y) {
  float* a = x.data_ptr<float>();
  const float* b = y.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) a[i] += b[i];
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
      cos_(c.head_dim / 2),
      sin_(c.head_dim / 2) {
  inv_freq_ = RopeParams::from(c).inv_freq(c.head_dim);
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

bool decode_step_supported(const LlamaModel& model) {
  const LlamaWeights& w = model.weights();
  const auto ok = [](const torch::Tensor& t) {
    return t.device().is_cpu() && (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16);
  };
  if (!ok(w.embed) || !ok(w.lm_head) || !ok(w.final_norm)) return false;
  for (const auto& l : w.layers) {
    if (!ok(l.attn_norm) || !ok(l.mlp_norm)) return false;
    for (const Linear* lin : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
      if (lin->lora_a.defined() || !ok(lin->weight) || (lin->bias.defined() && !ok(lin->bias))) return false;
  }
  return true;
}

const torch::Tensor& decode_step(const LlamaModel& model, KvCache& cache, int64_t token, DecodeState& s) {
  const ModelConfig& c = model.config();
  const LlamaWeights& w = model.weights();
  if (token < 0 || token >= c.vocab_size)
    throw std::invalid_argument("decode_step: token id " + std::to_string(token) + " outside the vocabulary [0, " +
                                std::to_string(c.vocab_size) + ")");
  torch::NoGradGuard no_grad;
  const int64_t Hq = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim, G = Hq / Hkv;
  s.x_.copy_(w.embed[token]);
  for (int i = 0; i < c.num_layers; ++i) {
    const LayerWeights& l = w.layers[i];
    // ---- attention: q, k, v of the token; RoPE at the cache's position ----
    rms_norm_into(s.x_, l.attn_norm, c.rms_norm_eps, s.normed_);
    project_into(l.q, s.normed_, s.q_);
    project_into(l.k, s.normed_, s.k_raw_);
    project_into(l.v, s.normed_, s.v_);
    cache.prepare(i, 1);
    const double pos = static_cast<double>(cache.chunk_position(i));
    for (size_t j = 0; j < s.inv_freq_.size(); ++j) {
      s.cos_[j] = static_cast<float>(std::cos(pos * s.inv_freq_[j]));
      s.sin_[j] = static_cast<float>(std::sin(pos * s.inv_freq_[j]));
    }
    rope_in_place(s.q_.data_ptr<float>(), Hq, d, s.cos_, s.sin_);
    s.k_rot_.copy_(s.k_raw_);
    rope_in_place(s.k_rot_.data_ptr<float>(), Hkv, d, s.cos_, s.sin_);
    const KeysValues kv = cache.append(i, s.k_raw_.view({Hkv, 1, d}), s.k_rot_.view({Hkv, 1, d}), s.v_.view({Hkv, 1, d}));
    if (kv.keys.scalar_type() != torch::kFloat32)
      throw std::invalid_argument(std::string("decode_step: the cache stores ") + c10::toString(kv.keys.scalar_type()) +
                                  " keys; decoding needs an fp32 cache (CacheOptions::dtype)");
    // ---- the G query heads of each KV head attend to its S slots ----
    const int64_t S = kv.keys.size(1);
    auto probs = s.scores_for(S).narrow(0, 0, Hq * S).view({Hkv, G, S});           // [Hkv, G, S]
    attend(kv, s.q_.data_ptr<float>(), G, probs, s.attn_.data_ptr<float>());
    const AttentionStatsRequest request = cache.stats_request(i);
    if (request.any()) {
      // One query: its probabilities summed over the G heads are the column
      // sums, the last query's row and the (one-row) observation window alike.
      auto colsum = s.colsum_.narrow(0, 0, Hkv * S).view({Hkv, S});                // [Hkv, S]
      at::sum_out(colsum, probs, {1});
      AttentionStats stats;
      if (request.column_sums) stats.column_sums = colsum;
      if (request.last_query) stats.last_query = colsum;
      if (request.window > 0) stats.window = colsum.unsqueeze(1);                   // [Hkv, 1, S]
      cache.observe(i, stats);
    }
    project_into(l.o, s.attn_, s.out_);
    add_in_place(s.x_, s.out_);
    // ---- SwiGLU MLP ----
    rms_norm_into(s.x_, l.mlp_norm, c.rms_norm_eps, s.normed_);
    project_into(l.gate, s.normed_, s.gate_);
    project_into(l.up, s.normed_, s.up_);
    swiglu_in_place(s.gate_, s.up_);
    project_into(l.down, s.gate_, s.out_);
    add_in_place(s.x_, s.out_);
  }
  cache.end_chunk(1);
  rms_norm_into(s.x_, w.final_norm, c.rms_norm_eps, s.normed_);
  matvec_into(s.logits_, w.lm_head, s.normed_);
  return s.logits_;
}

}  // namespace lococo
