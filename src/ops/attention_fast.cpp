// The fused CPU attention: tensor glue, instruction-set dispatch, scheduling
// and the autograd function around the kernels of attention_kernels.inc.
#include "ops/attention_fast.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <utility>

#include <ATen/Parallel.h>

#include "lococo/core/cpu_features.h"

namespace lococo {
namespace fast_attention {

// ---- what the kernels see -------------------------------------------------------------
// Shapes of one call, with the blocking chosen for it.
struct Dims {
  int64_t B, Hkv, G, T, S, d;
  int64_t q_block;  // queries per tile (x G heads = tile rows)
  int64_t k_block;  // keys per block
  double scale;     // 1 / sqrt(d)
  bool keep_probs;  // statistics requested: the forward keeps a tile's probability blocks
  int64_t heads() const { return B * Hkv; }
  int64_t q_blocks() const { return (T + q_block - 1) / q_block; }
  int64_t k_blocks() const { return (S + k_block - 1) / k_block; }
};

// Sizes that depend on the vector width (computed by the kernels' geometry()).
struct Geometry {
  int64_t lanes;       // elements per vector
  int64_t tile_lanes;  // mp: lanes of a query tile, G * q_block padded to whole vectors
  int64_t dp;          // head_dim padded to whole vectors
  int64_t scratch;     // elements of scratch one task needs
};

// Statistics the forward writes (batch 1); each null unless requested.
template <class T>
struct StatsOut {
  T* column_parts;  // [Hkv, q_blocks, S] each query tile's column sums, zero-initialised
  T* last_query;    // [Hkv, S], zero-initialised
  T* window;        // [Hkv, window_rows, S], zero-initialised
  int64_t window_rows;
};

// Pointers into contiguous tensors; layouts are listed in attention_kernels.inc.
template <class T>
struct ForwardIO {
  const T* q;
  const T* k;
  const T* v;
  T* out;
  T* lse;
  StatsOut<T> stats;
};

// The query tiles packed once for the backward ("t" = tile bh * q_blocks + qb).
template <class T>
struct TileArrays {
  T* qT;     // [tiles, d, mp]   queries * scale, transposed
  T* q;      // [tiles, mp, dp]  queries * scale
  T* doT;    // [tiles, d, mp]   output gradient, transposed
  T* dout;   // [tiles, mp, dp]  output gradient
  T* lse;    // [tiles, mp]
  T* delta;  // [tiles, mp]      rowsum(dout * out)
};

template <class T>
struct PackIO {
  const T* q;
  const T* dout;
  const T* lse;
  const T* delta;
  TileArrays<T> tiles;
};

template <class T>
struct BackwardIO {
  const T* k;
  const T* v;
  TileArrays<T> tiles;
  T* dk;
  T* dv;
};

// The entry points of one instruction set's kernels (kernel_table() in the .inc).
template <class T>
struct Kernels {
  void (*forward)(const Dims&, const ForwardIO<T>&, int64_t bh, int64_t qb, T* scratch);
  void (*pack)(const Dims&, const PackIO<T>&, int64_t bh, int64_t qb);
  void (*backward)(const Dims&, const BackwardIO<T>&, int64_t bh, int64_t kb, T* dq_acc, T* scratch);
  void (*unpack_dq)(const Dims&, const T* dq_acc, int64_t workers, int64_t worker_stride, T* dq, int64_t bh,
                    int64_t qb);
  Geometry (*geometry)(const Dims&);
};

// ---- one copy of the kernels per instruction set ----------------------------------------
// Every std header the kernels could touch is included above, outside the
// target regions, so no inline library code gets compiled for a wider ISA.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LOCOCO_ATTENTION_X86_VARIANTS 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
namespace avx512 {
constexpr int kVecBytes = 64, kAccRegs = 16, kMaxNV = 4;  // 32 zmm registers
#include "attention_kernels.inc"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
constexpr int kVecBytes = 32, kAccRegs = 8, kMaxNV = 2;  // 16 ymm registers
#include "attention_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options
#endif

namespace portable {
constexpr int kVecBytes = 16, kAccRegs = 8, kMaxNV = 2;  // SSE2 / NEON-sized vectors
#include "attention_kernels.inc"
}  // namespace portable

template <class T>
Kernels<T> kernels_for(SimdLevel level) {
#ifdef LOCOCO_ATTENTION_X86_VARIANTS
  if (level >= SimdLevel::Avx512) return avx512::kernel_table<T>();
  if (level == SimdLevel::Avx2) return avx2::kernel_table<T>();
#endif
  return portable::kernel_table<T>();
}

// ---- blocking and scheduling -------------------------------------------------------------
constexpr int64_t kTileRows = 64;  // target lanes (heads x queries) of a query tile
constexpr int64_t kKeyBlock = 64;  // keys per block

Dims dims_of(const torch::Tensor& q, const torch::Tensor& k, bool keep_probs = false) {
  Dims a;
  a.B = q.size(0), a.Hkv = k.size(1), a.G = q.size(1) / k.size(1);
  a.T = q.size(2), a.S = k.size(2), a.d = q.size(3);
  a.q_block = std::max<int64_t>(1, std::min(a.T, kTileRows / a.G));
  a.k_block = kKeyBlock;
  a.scale = 1.0 / std::sqrt(static_cast<double>(a.d));
  a.keep_probs = keep_probs;
  return a;
}

// The variant for one call: the active one, except that a tile fitting in one
// AVX2 vector (decoding: G * T lanes) runs the AVX2 variant, because most lanes
// of a 16-lane AVX-512 vector would be computed for nothing.
template <class T>
Kernels<T> kernels_for(const Dims& a) {
  SimdLevel level = active_simd_level();
  if (level >= SimdLevel::Avx512 && a.G * a.q_block * static_cast<int64_t>(sizeof(T)) <= 32) level = SimdLevel::Avx2;
  return kernels_for<T>(level);
}

int64_t worker_count(int64_t tasks) { return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks)); }

// Tasks [0, n) on the intra-op pool, handed out dynamically (the machine is
// shared, so static shares finish unevenly). For tasks that own their outputs.
void run_dynamic(int64_t n, int64_t workers, const std::function<void(int64_t task, int64_t worker)>& fn) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w)
      for (int64_t i = next++; i < n; i = next++) fn(i, w);
  });
}

// Tasks [0, n) dealt to workers in a fixed "snake" order (0 1 1 0 0 1 ...), so
// with tasks sorted heaviest first the shares balance, and what each worker
// accumulates, hence the rounding of the sum, depends only on the worker count.
void run_static(int64_t n, int64_t workers, const std::function<void(int64_t task, int64_t worker)>& fn) {
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = i % (2 * workers);
        if ((p < workers ? p : 2 * workers - 1 - p) == w) fn(i, w);
      }
  });
}

// One task's scratch per worker: [workers, scratch]. The CPU allocator aligns to 64 bytes.
torch::Tensor scratch_for(const Geometry& g, int64_t workers, const torch::TensorOptions& o) {
  return torch::empty({workers, g.scratch}, o);
}

// ---- forward -------------------------------------------------------------------------------
// q [B, Hq, T, d], k, v [B, Hkv, S, d], contiguous, dtype T. Fills `stats`
// (batch 1) when it is given and the request asks for anything.
template <class T>
std::pair<torch::Tensor, torch::Tensor> forward_impl(const torch::Tensor& q, const torch::Tensor& k,
                                                     const torch::Tensor& v, const AttentionStatsRequest& request,
                                                     AttentionStats* stats) {
  const Dims a = dims_of(q, k, stats && request.any());
  const Kernels<T> kern = kernels_for<T>(a);
  auto out = torch::empty_like(q);                                 // [B, Hq, T, d]
  auto lse = torch::empty({a.B, a.G * a.Hkv, a.T}, q.options());  // [B, Hq, T]
  const int64_t w = std::max<int64_t>(0, std::min(request.window, a.T));
  torch::Tensor parts, last, win;
  if (a.keep_probs && request.column_sums) parts = torch::zeros({a.Hkv, a.q_blocks(), a.S}, q.options());
  if (a.keep_probs && request.last_query) last = torch::zeros({a.Hkv, a.S}, q.options());  // [Hkv, S]
  if (a.keep_probs && w > 0) win = torch::zeros({a.Hkv, w, a.S}, q.options());             // [Hkv, w, S]
  auto ptr = [](torch::Tensor& t) { return t.defined() ? t.template data_ptr<T>() : nullptr; };
  const ForwardIO<T> io{q.data_ptr<T>(),   k.data_ptr<T>(), v.data_ptr<T>(), out.data_ptr<T>(),
                        lse.data_ptr<T>(), {ptr(parts), ptr(last), ptr(win), w}};
  const int64_t n = a.heads() * a.q_blocks(), workers = worker_count(n);
  torch::Tensor scratch = scratch_for(kern.geometry(a), workers, q.options());  // [workers, elems]
  T* const base = scratch.data_ptr<T>();
  const int64_t stride = scratch.size(1);
  // Later query blocks see more keys: hand those out first.
  run_dynamic(n, workers, [&](int64_t i, int64_t wk) {
    kern.forward(a, io, i % a.heads(), a.q_blocks() - 1 - i / a.heads(), base + wk * stride);
  });
  if (parts.defined()) stats->column_sums = parts.sum(1).to(torch::kFloat32);  // [Hkv, S]
  if (last.defined()) stats->last_query = last.to(torch::kFloat32);
  if (win.defined()) stats->window = win.to(torch::kFloat32);
  return {out, lse};
}

// ---- packed query tiles ----------------------------------------------------------------------
// The backward's TileArrays for every tile, and the storage that owns them.
template <class T>
struct PackedTiles {
  torch::Tensor storage;  // [elements]
  TileArrays<T> arrays{};
};

template <class T>
PackedTiles<T> pack_tiles(const Kernels<T>& kern, const Dims& a, const PackIO<T>& in, const torch::TensorOptions& o) {
  const Geometry g = kern.geometry(a);
  const int64_t tiles = a.heads() * a.q_blocks(), by_dim = tiles * a.d * g.tile_lanes;
  const int64_t by_row = tiles * g.tile_lanes * g.dp, values = tiles * g.tile_lanes;
  PackedTiles<T> p;
  p.storage = torch::empty({2 * by_dim + 2 * by_row + 2 * values}, o);
  T* next = p.storage.template data_ptr<T>();
  auto take = [&](int64_t n) { return std::exchange(next, next + n); };
  p.arrays = {take(by_dim), take(by_row), take(by_dim), take(by_row), take(values), take(values)};
  PackIO<T> io = in;
  io.tiles = p.arrays;
  run_dynamic(tiles, worker_count(tiles), [&](int64_t i, int64_t) { kern.pack(a, io, i / a.q_blocks(), i % a.q_blocks()); });
  return p;
}

// ---- backward --------------------------------------------------------------------------------
// Saved tensors as in forward_impl plus dout [B, Hq, T, d]; returns dq, dk, dv
// (dq undefined unless need_dq).
template <class T>
std::array<torch::Tensor, 3> backward_impl(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                           const torch::Tensor& out, const torch::Tensor& lse,
                                           const torch::Tensor& dout_in, bool need_dq) {
  const Dims a = dims_of(q, k);
  const Kernels<T> kern = kernels_for<T>(a);
  const Geometry g = kern.geometry(a);
  auto dout = dout_in.to(q.scalar_type()).contiguous();       // [B, Hq, T, d]
  auto delta = (dout * out).sum(-1).contiguous();             // [B, Hq, T]
  auto dk = torch::empty_like(k), dv = torch::empty_like(v);  // [B, Hkv, S, d], every row written
  const PackedTiles<T> tiles =
      pack_tiles<T>(kern, a, {q.data_ptr<T>(), dout.data_ptr<T>(), lse.data_ptr<T>(), delta.data_ptr<T>(), {}},
                    q.options());
  const BackwardIO<T> io{k.data_ptr<T>(), v.data_ptr<T>(), tiles.arrays, dk.data_ptr<T>(), dv.data_ptr<T>()};
  const int64_t n = a.heads() * a.k_blocks(), workers = worker_count(n);
  const int64_t tiles_n = a.heads() * a.q_blocks(), acc_stride = tiles_n * a.d * g.tile_lanes;
  torch::Tensor dq_acc;  // [workers, tiles, d, mp]: each worker's share of dQ^T / scale
  if (need_dq) dq_acc = torch::zeros({workers, acc_stride}, q.options());
  torch::Tensor scratch = scratch_for(g, workers, q.options());  // [workers, elems]
  T* const base = scratch.data_ptr<T>();
  T* const acc_base = need_dq ? dq_acc.data_ptr<T>() : nullptr;
  const int64_t stride = scratch.size(1);
  // Earlier key blocks are seen by more queries: task i = key block i / heads.
  run_static(n, workers, [&](int64_t i, int64_t w) {
    T* acc = acc_base ? acc_base + w * acc_stride : nullptr;
    kern.backward(a, io, i % a.heads(), i / a.heads(), acc, base + w * stride);
  });
  torch::Tensor dq;  // [B, Hq, T, d]
  if (need_dq) {
    dq = torch::empty_like(q);
    T* const dq_ptr = dq.data_ptr<T>();
    run_dynamic(tiles_n, worker_count(tiles_n), [&](int64_t i, int64_t) {
      kern.unpack_dq(a, acc_base, workers, acc_stride, dq_ptr, i / a.q_blocks(), i % a.q_blocks());
    });
  }
  return {dq, dk, dv};
}

// ---- dtype dispatch -----------------------------------------------------------------------------
std::pair<torch::Tensor, torch::Tensor> forward_any(const torch::Tensor& q, const torch::Tensor& k,
                                                    const torch::Tensor& v, const AttentionStatsRequest& request,
                                                    AttentionStats* stats) {
  if (q.scalar_type() == torch::kFloat64) return forward_impl<double>(q, k, v, request, stats);
  return forward_impl<float>(q, k, v, request, stats);
}

// ---- autograd ---------------------------------------------------------------------------------------
// Saves q, k, v, out and lse: O(T*d), never the [T, S] probabilities. The
// statistics (plain tensors, no gradient) come out of the same forward.
class FastAttentionFunction : public torch::autograd::Function<FastAttentionFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q,
                                                const torch::Tensor& k, const torch::Tensor& v,
                                                const AttentionStatsRequest* request, AttentionStats* stats) {
    auto [out, lse] = forward_any(q, k, v, *request, stats);
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  // One gradient per forward argument: none for the request and the statistics.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& q = saved[0];
    if (!grads[0].defined())  // only lse was used, and it has no gradient
      return {torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    const bool need_dq = ctx->needs_input_grad(0);
    auto g = q.scalar_type() == torch::kFloat64
                 ? backward_impl<double>(q, saved[1], saved[2], saved[3], saved[4], grads[0], need_dq)
                 : backward_impl<float>(q, saved[1], saved[2], saved[3], saved[4], grads[0], need_dq);
    return {g[0], g[1], g[2], torch::Tensor(), torch::Tensor()};
  }
};

torch::ScalarType compute_type(torch::ScalarType t) {
  return t == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

}  // namespace fast_attention

// ---- public entry points ---------------------------------------------------------------------
bool attention_fast_supported(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  for (const auto* t : {&q, &k, &v}) {
    if (!t->defined() || !t->device().is_cpu() || t->layout() != torch::kStrided || t->dim() != 4) return false;
    if (t->numel() == 0) return false;
    const auto s = t->scalar_type();
    if (s != torch::kFloat32 && s != torch::kFloat64 && s != torch::kBFloat16 && s != torch::kFloat16) return false;
  }
  return q.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type();
}

std::pair<torch::Tensor, torch::Tensor> attention_fast_forward(const torch::Tensor& q, const torch::Tensor& k,
                                                               const torch::Tensor& v) {
  const auto ct = fast_attention::compute_type(q.scalar_type());
  return fast_attention::forward_any(q.to(ct).contiguous(), k.to(ct).contiguous(), v.to(ct).contiguous(), {},
                                     nullptr);
}

torch::Tensor attention_fast(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const AttentionStatsRequest& request, AttentionStats* stats) {
  TORCH_CHECK(attention_fast_supported(q, k, v), "attention_fast: needs non-empty CPU float tensors of one dtype");
  // What the kernels index by; attention() has checked the rest of the contract.
  TORCH_CHECK(k.sizes() == v.sizes() && q.size(0) == k.size(0) && q.size(3) == k.size(3) &&
                  q.size(1) % k.size(1) == 0 && k.size(2) >= q.size(2),
              "attention_fast: q [B, Hq, T, d] and k, v [B, Hkv, S >= T, d] do not match");
  TORCH_CHECK(!request.any() || q.size(0) == 1, "attention_fast: statistics need batch size 1");
  const auto ct = fast_attention::compute_type(q.scalar_type());
  auto qc = q.to(ct).contiguous(), kc = k.to(ct).contiguous(), vc = v.to(ct).contiguous();
  const bool grad = torch::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  AttentionStats* wanted = request.any() ? stats : nullptr;
  torch::Tensor out;  // [B, Hq, T, d]
  if (grad)
    out = fast_attention::FastAttentionFunction::apply(qc, kc, vc, &request, wanted)[0];
  else
    out = fast_attention::forward_any(qc, kc, vc, request, wanted).first;
  return out.to(q.scalar_type());
}

}  // namespace lococo
