// Matrix-vector products for decoding: y = W x for one token.
//
// Generation reads every weight matrix once per token, so its speed is the
// rate at which W streams from memory. OpenBLAS's sgemv streams fp32 near
// that limit, but libtorch has no bf16 matrix-vector product that does:
// linear() with one bf16 row goes through oneDNN's GEMM.
// These kernels read W in its stored dtype, row by row against one x vector,
// the rows split across the intra-op threads, and sum in fp32. Against bf16
// weights they read x rounded to bf16 too (GemvInput): the product of two bf16
// values is exact in fp32, and AVX512_BF16's vdpbf16ps then takes one
// instruction per 64 bytes of W (widening bf16 to fp32 takes three, which
// leaves the stream short of the memory's read rate). x's rounding is the accuracy cost:
// 2^-9 relative per element, as oneDNN's bf16 products round theirs. Variants
// for AVX-512 (with and without BF16), AVX2+FMA and portable code are compiled
// into the one binary and chosen at run time (cpu_features.h); all give the
// same products, summed in a different order.
//
// bench/bench_gemv.cpp measures them against addmv and linear per shape and
// dtype: they stream fp32 as fast as OpenBLAS's sgemv and bf16 well above
// oneDNN's linear (docs/DESIGN.md section 8), so decode_step uses them for
// every weight and never enters OpenBLAS, whose pthreads build would keep its
// own threads spinning beside libtorch's OpenMP ones.
//
// Threads: gemv() splits the rows across a thread team (thread_team.h);
// decode_step runs gemv_row_range() inside its own team, one per token.
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace lococo {

// True when gemv() accepts `w`: a contiguous 2-D CPU tensor, fp32 or bf16.
bool gemv_supported(const torch::Tensor& w);

// y [rows] = W [rows, cols] x [cols]; x and y fp32, not aliasing W (for bf16
// W, x is rounded to bf16 first, into a temporary).
// Rows split across the intra-op threads (one thread below 256 KiB of W).
// Throws std::invalid_argument when !gemv_supported(w).
void gemv(const torch::Tensor& w, const float* x, float* y);

// out [n] = x [n] rounded to bf16 bits (to nearest, ties to even: torch's
// conversion; NaN stays NaN).
void round_to_bf16(const float* x, int64_t n, uint16_t* out);

// The vector x of y = W x in the forms the kernels read: decode_step rounds
// each input once (round_to_bf16) for all the products that read it.
struct GemvInput {
  const float* f32 = nullptr;      // [cols] read against fp32 weights
  const uint16_t* bf16 = nullptr;  // [cols] the same rounded to bf16, read against bf16 weights
};

// Rows [row_begin, row_end) of y = W x, on the calling thread: decode_step's
// thread team gives each member a share of the rows. Each row's sum is formed
// the same way wherever the row falls, so results do not depend on the split.
// Precondition, not checked per call (it runs once per block of rows):
// gemv_supported(w), which decode_step_supported() checks for every weight.
void gemv_row_range(const torch::Tensor& w, const GemvInput& x, float* y, int64_t row_begin, int64_t row_end);

// Single-threaded pieces for attention over cached keys and values (the
// caller splits heads across threads), fp32 rows `ld` values apart:
// y [rows] = W x (x [cols]): one query's scores against the keys;
void dot_rows(const float* w, int64_t rows, int64_t cols, int64_t ld, const float* x, float* y);
// y [cols] += sum over r of x[r] W[r, :]: the values weighted by probabilities;
void add_weighted_rows(const float* w, int64_t rows, int64_t cols, int64_t ld, const float* x, float* y);
// out [rows, d] (contiguous) = rows of k rotated by RoPE, row r at the angles
// cos[r, :], sin[r, :] ([rows, d / 2] each): keys stored before RoPE.
void rope_rows(const float* k, int64_t rows, int64_t d, int64_t ld, const float* cos, const float* sin, float* out);
// each of `rows` rows of `n` values of s becomes softmax(row * scale), scale > 0
// (e^x by glibc's libmvec on AVX-512 / AVX2: over a deep cache a scalar expf
// per score would dominate a token's time).
void softmax_rows(float* s, int64_t rows, int64_t n, float scale);

}  // namespace lococo
