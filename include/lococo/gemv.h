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
// dtype; matvec_kernel() below is the one place that picks a kernel. Measured
// on the development machine (2 threads, 1B shapes, idle, OpenMP OpenBLAS):
// fp32 gemv 41-51 GB/s vs OpenBLAS sgemv 40-51 GB/s (equal or better on every
// shape), bf16 gemv 32-52 GB/s vs oneDNN linear 15-27 GB/s. So gemv decodes
// both dtypes; decoding then never enters OpenBLAS, whose pthreads build
// would keep its own threads spinning beside libtorch's OpenMP ones.
//
// The rows are split with at::parallel_for, which runs in parallel only in
// files compiled with -fopenmp (CMakeLists.txt links OpenMP for that reason).
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace lococo {

// Which implementation computes W x for a weight (chosen by dtype, measured).
enum class MatvecKernel {
  Blas,    // at::addmv_out (OpenBLAS sgemv): fp32 only, and for weights gemv cannot read
  Simd,    // gemv() below: fp32 or bf16
};

// True when gemv() accepts `w`: a contiguous 2-D CPU tensor, fp32 or bf16.
bool gemv_supported(const torch::Tensor& w);

// y [rows] = W [rows, cols] x [cols]; x and y fp32, not aliasing W.
// Throws std::invalid_argument when !gemv_supported(w).
void gemv(const torch::Tensor& w, const float* x, float* y);

// Single-threaded pieces for attention over cached keys and values (the
// caller splits heads across threads), fp32 rows `ld` values apart:
// y [rows] = W x (x [cols]): one query's scores against the keys;
void dot_rows(const float* w, int64_t rows, int64_t cols, int64_t ld, const float* x, float* y);
// y [cols] += sum over r of x[r] W[r, :]: the values weighted by probabilities.
void add_weighted_rows(const float* w, int64_t rows, int64_t cols, int64_t ld, const float* x, float* y);

// The kernel decode uses for this weight: gemv, unless LOCOCO_MATVEC=blas asks
// for OpenBLAS for fp32 weights (for side-by-side measurement).
MatvecKernel matvec_kernel(const torch::Tensor& w);

}  // namespace lococo
