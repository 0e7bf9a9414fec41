// Matrix-vector products for decoding: y = W x for one token.
//
// Generation reads every weight matrix once per token, so its speed is the
// rate at which W streams from memory. Measured on the 2-core development
// machine: OpenBLAS's sgemv (torch::mv / addmv) streams fp32 near the memory
// limit, but libtorch has no bf16 matrix-vector product that does: linear()
// with one bf16 row goes through oneDNN's GEMM at roughly half the bytes/s.
// These kernels read W in its stored dtype (fp32 or bf16, widened to fp32 in
// registers, so the sum is accumulated in fp32 exactly as for fp32 weights),
// row by row against one x vector, the rows split across the
// intra-op threads. Variants for AVX-512, AVX2+FMA and portable code are
// compiled into the one binary and chosen at run time (cpu_features.h).
//
// bench/bench_gemv.cpp measures them against addmv and linear per shape and
// dtype, which is why decode_step uses them for every weight. Measured
// on the development machine (2 threads, 1B shapes, idle, OpenMP OpenBLAS):
// fp32 gemv 41-51 GB/s vs OpenBLAS sgemv 40-51 GB/s (equal or better on every
// shape), bf16 gemv 32-52 GB/s vs oneDNN linear 15-27 GB/s. So gemv decodes
// both dtypes; decoding then never enters OpenBLAS, whose pthreads build
// would keep its own threads spinning beside libtorch's OpenMP ones.
//
// Threads: gemv() splits the rows across a thread team (thread_team.h);
// decode_step runs gemv_row_range() inside its own team, one per token.
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace lococo {

// True when gemv() accepts `w`: a contiguous 2-D CPU tensor, fp32 or bf16.
bool gemv_supported(const torch::Tensor& w);

// y [rows] = W [rows, cols] x [cols]; x and y fp32, not aliasing W.
// Rows split across the intra-op threads (one thread below 256 KiB of W).
// Throws std::invalid_argument when !gemv_supported(w).
void gemv(const torch::Tensor& w, const float* x, float* y);

// Rows [row_begin, row_end) of y = W x, on the calling thread: decode_step's
// thread team gives each member a share of the rows. Each row's sum is formed
// the same way wherever the row falls, so results do not depend on the split.
// Precondition, not checked per call (it runs once per block of rows):
// gemv_supported(w), which decode_step_supported() checks for every weight.
void gemv_row_range(const torch::Tensor& w, const float* x, float* y, int64_t row_begin, int64_t row_end);

// Single-threaded pieces for attention over cached keys and values (the
// caller splits heads across threads), fp32 rows `ld` values apart:
// y [rows] = W x (x [cols]): one query's scores against the keys;
void dot_rows(const float* w, int64_t rows, int64_t cols, int64_t ld, const float* x, float* y);
// y [cols] += sum over r of x[r] W[r, :]: the values weighted by probabilities;
void add_weighted_rows(const float* w, int64_t rows, int64_t cols, int64_t ld, const float* x, float* y);
// out [rows, d] (contiguous) = rows of k rotated by RoPE, row r at the angles
// cos[r, :], sin[r, :] ([rows, d / 2] each): keys stored before RoPE.
void rope_rows(const float* k, int64_t rows, int64_t d, int64_t ld, const float* cos, const float* sin, float* out);

}  // namespace lococo
