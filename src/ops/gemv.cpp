// Instruction-set variants of the matrix-vector kernel, the dispatch between
// them and the split of rows across threads. See gemv.h for why.
#include "ops/gemv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include "lococo/core/cpu_features.h"
#include "core/thread_team.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LOCOCO_GEMV_X86_VARIANTS 1
#include <immintrin.h>
#endif

namespace lococo {
namespace {

// x [n] -> out [n] rounded to bf16 bits by c10's conversion (to nearest, ties
// to even; denormals kept; NaN stays NaN), one value at a time.
inline void round_to_bf16_scalar(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = c10::BFloat16(x[i]).x;
}

// ---- one copy of the kernel per instruction set ---------------------------------------
#ifdef LOCOCO_GEMV_X86_VARIANTS
// GCC 12's intrinsic headers make "undefined" vectors as `__m256d __Y = __Y;`,
// which -W(maybe-)uninitialized reports inside every kernel that inlines them.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
// glibc's libmvec (libc6-dev): expf on 16 and 8 lanes, the vector functions
// GCC itself calls when it vectorises expf; declared here, as <math.h> only
// announces them under -ffast-math.
extern "C" __m512 _ZGVeN16v_expf(__m512);
extern "C" __m256 _ZGVdN8v_expf(__m256);
namespace avx512 {
using Vec = __m512;
constexpr int64_t kLanes = 16;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec fma(Vec a, Vec b, Vec acc) { return _mm512_fmadd_ps(a, b, acc); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec fms(Vec a, Vec b, Vec c) { return _mm512_fmsub_ps(a, b, c); }
inline __mmask16 first(int64_t n) { return static_cast<__mmask16>((1u << n) - 1); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec load_tail(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(first(n), p); }
// bf16 is the top half of an fp32: widen each 16-bit value and shift it up.
inline Vec widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
inline Vec load(const uint16_t* p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline Vec load_tail(const uint16_t* p, int64_t n) { return widen(_mm256_maskz_loadu_epi16(first(n), p)); }
inline float hsum(Vec v) { return _mm512_reduce_add_ps(v); }
inline Vec broadcast(float f) { return _mm512_set1_ps(f); }
inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline float hmax(Vec v) { return _mm512_reduce_max_ps(v); }
inline Vec vexp(Vec v) { return _ZGVeN16v_expf(v); }
#include "gemv_kernels.inc"
// c10's rounding sixteen values at a time (c10 has no vector form; decode
// rounds ~12k values per layer): add 0x7fff plus the lowest kept bit, keep the
// top half; NaN keeps its top half with the quiet bit set.
inline void round_to_bf16(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512i bits = _mm512_loadu_si512(x + i);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i top = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), odd), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(_mm512_castsi512_ps(bits), _mm512_castsi512_ps(bits), _CMP_UNORD_Q);
    top = _mm512_mask_or_epi32(top, nan, _mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm512_cvtepi32_epi16(top));
  }
  round_to_bf16_scalar(x + i, n - i, out + i);
}
}  // namespace avx512
#pragma GCC pop_options

// The bf16 x bf16 product with AVX512_BF16: vdpbf16ps multiplies 32 pairs of
// bf16 (exactly) and adds each lane's two products to an fp32 accumulator, one
// instruction per 64 bytes of W where widening takes three: it keeps up with
// the memory's read rate where widening falls short.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma")
namespace avx512bf16 {
inline __m512bh pairs(const uint16_t* p) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p)); }
inline __m512bh pairs_tail(const uint16_t* p, int64_t n) {  // the first n < 32 values, the rest 0
  return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(static_cast<__mmask32>((1ull << n) - 1), p));
}
inline float dot_row(const uint16_t* w, const uint16_t* x, int64_t cols) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 64 <= cols; c += 64) {
    a0 = _mm512_dpbf16_ps(a0, pairs(w + c), pairs(x + c));
    a1 = _mm512_dpbf16_ps(a1, pairs(w + c + 32), pairs(x + c + 32));
  }
  if (c + 32 <= cols) {
    a0 = _mm512_dpbf16_ps(a0, pairs(w + c), pairs(x + c));
    c += 32;
  }
  if (c < cols) a1 = _mm512_dpbf16_ps(a1, pairs_tail(w + c, cols - c), pairs_tail(x + c, cols - c));
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
// Each row starts by asking for the first lines 8 KiB ahead (the 4 KiB page
// after next for a 2048-wide bf16 row): the hardware prefetcher restarts at
// every 4 KiB page, and a bf16 row of the 1B shape is one page.
constexpr int64_t kPrefetchAheadBytes = 8192;
constexpr int kPrefetchLines = 4;
void gemv_rows(const uint16_t* w, int64_t cols, const uint16_t* x, float* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const char* ahead = reinterpret_cast<const char*>(w + r * cols) + kPrefetchAheadBytes;
    for (int k = 0; k < kPrefetchLines; ++k) _mm_prefetch(ahead + 64 * k, _MM_HINT_T0);
    y[r] = dot_row(w + r * cols, x, cols);
  }
}
}  // namespace avx512bf16
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
using Vec = __m256;
constexpr int64_t kLanes = 8;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec fma(Vec a, Vec b, Vec acc) { return _mm256_fmadd_ps(a, b, acc); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec fms(Vec a, Vec b, Vec c) { return _mm256_fmsub_ps(a, b, c); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec load(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// AVX2 has no masked 16-bit load; tails (at most 7 values) go through a buffer.
template <class E>
inline Vec load_tail(const E* p, int64_t n) {
  alignas(32) E buf[kLanes] = {};
  std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(E));
  return load(static_cast<const E*>(buf));
}
inline Vec broadcast(float f) { return _mm256_set1_ps(f); }
inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline float hsum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline float hmax(Vec v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
inline Vec vexp(Vec v) { return _ZGVdN8v_expf(v); }
#include "gemv_kernels.inc"
inline void round_to_bf16(const float* x, int64_t n, uint16_t* out) { round_to_bf16_scalar(x, n, out); }
}  // namespace avx2
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

namespace portable {
using Vec = float;  // one lane: the compiler may still vectorise the callers' loops
constexpr int64_t kLanes = 1;
inline Vec zero() { return 0.0f; }
inline Vec fma(Vec a, Vec b, Vec acc) { return acc + a * b; }
inline Vec add(Vec a, Vec b) { return a + b; }
inline Vec mul(Vec a, Vec b) { return a * b; }
inline Vec fms(Vec a, Vec b, Vec c) { return a * b - c; }
inline Vec load(const float* p) { return *p; }
inline Vec load(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
template <class E>
inline Vec load_tail(const E* p, int64_t) { return load(p); }
inline float hsum(Vec v) { return v; }
inline Vec broadcast(float f) { return f; }
inline void store(float* p, Vec v) { *p = v; }
inline Vec vmax(Vec a, Vec b) { return std::max(a, b); }
inline float hmax(Vec v) { return v; }
inline Vec vexp(Vec v) { return std::exp(v); }
#include "gemv_kernels.inc"
inline void round_to_bf16(const float* x, int64_t n, uint16_t* out) { round_to_bf16_scalar(x, n, out); }
}  // namespace portable

// The kernels of one instruction-set variant.
struct Kernels {
  void (*rows_f32)(const float*, int64_t, const float*, float*, int64_t, int64_t);
  void (*rows_bf16)(const uint16_t*, int64_t, const uint16_t*, float*, int64_t, int64_t);
  void (*round_to_bf16)(const float*, int64_t, uint16_t*);
  void (*dot_rows)(const float*, int64_t, int64_t, int64_t, const float*, float*);
  void (*add_weighted_rows)(const float*, int64_t, int64_t, int64_t, const float*, float*);
  void (*rope_rows)(const float*, int64_t, int64_t, int64_t, const float*, const float*, float*);
  void (*softmax_rows)(float*, int64_t, int64_t, float);
};
#define LOCOCO_GEMV_KERNELS(ns)                                                                                 \
  Kernels{ns::gemv_rows<float, float>, ns::gemv_rows<uint16_t, uint16_t>, ns::round_to_bf16, ns::dot_rows, \
          ns::add_weighted_rows, ns::rope_rows, ns::softmax_rows}

// The widest variant the CPU (and the LOCOCO_SIMD cap) allows.
Kernels active_kernels() {
#ifdef LOCOCO_GEMV_X86_VARIANTS
  switch (active_simd_level()) {
    case SimdLevel::Avx512Bf16: {
      Kernels k = LOCOCO_GEMV_KERNELS(avx512);
      k.rows_bf16 = avx512bf16::gemv_rows;
      return k;
    }
    case SimdLevel::Avx512: return LOCOCO_GEMV_KERNELS(avx512);
    case SimdLevel::Avx2: return LOCOCO_GEMV_KERNELS(avx2);
    case SimdLevel::Scalar: break;
  }
#endif
  return LOCOCO_GEMV_KERNELS(portable);
}
#undef LOCOCO_GEMV_KERNELS

// Below this many weight bytes one thread does the whole product: waking a
// second thread costs a few microseconds, more than a small matrix takes to stream.
constexpr int64_t kParallelBytes = 256 * 1024;
constexpr int64_t kRowBlock = 16;  // rows per block the threads claim (whole cache lines of y)

}  // namespace

void dot_rows(const float* w, int64_t rows, int64_t cols, int64_t ld, const float* x, float* y) {
  active_kernels().dot_rows(w, rows, cols, ld, x, y);
}

void add_weighted_rows(const float* w, int64_t rows, int64_t cols, int64_t ld, const float* x, float* y) {
  active_kernels().add_weighted_rows(w, rows, cols, ld, x, y);
}

void rope_rows(const float* k, int64_t rows, int64_t d, int64_t ld, const float* cos, const float* sin, float* out) {
  active_kernels().rope_rows(k, rows, d, ld, cos, sin, out);
}

bool gemv_supported(const torch::Tensor& w) {
  return w.defined() && w.dim() == 2 && w.device().is_cpu() && w.is_contiguous() &&
         (w.scalar_type() == torch::kFloat32 || w.scalar_type() == torch::kBFloat16);
}

void softmax_rows(float* s, int64_t rows, int64_t n, float scale) { active_kernels().softmax_rows(s, rows, n, scale); }

void round_to_bf16(const float* x, int64_t n, uint16_t* out) { active_kernels().round_to_bf16(x, n, out); }

void gemv_row_range(const torch::Tensor& w, const GemvInput& x, float* y, int64_t row_begin, int64_t row_end) {
  const int64_t cols = w.size(1);
  if (w.scalar_type() == torch::kFloat32)
    return active_kernels().rows_f32(w.data_ptr<float>(), cols, x.f32, y, row_begin, row_end);
  const auto* bits = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());  // bf16 = upper fp32 half
  active_kernels().rows_bf16(bits, cols, x.bf16, y, row_begin, row_end);
}

void gemv(const torch::Tensor& w, const float* x, float* y) {
  if (!gemv_supported(w))
    throw std::invalid_argument("gemv: weight must be a contiguous 2-D CPU fp32 or bf16 tensor, got " +
                                std::string(w.defined() ? w.toString() : "undefined") + " " +
                                (w.defined() ? std::to_string(w.dim()) + "-D" : ""));
  const int64_t rows = w.size(0), cols = w.size(1);
  std::vector<uint16_t> rounded;  // [cols] x in bf16, for bf16 weights
  if (w.scalar_type() == torch::kBFloat16) {
    rounded.resize(static_cast<size_t>(cols));
    round_to_bf16(x, cols, rounded.data());
  }
  const GemvInput input{x, rounded.data()};
  const bool small = w.numel() * static_cast<int64_t>(w.element_size()) < kParallelBytes;
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  run_team(small ? 1 : at::get_num_threads(), [&](TeamMember& t) {
    t.for_each_block(blocks, [&](int64_t b) { gemv_row_range(w, input, y, b * kRowBlock, std::min(rows, (b + 1) * kRowBlock)); });
  });
}

}  // namespace lococo
