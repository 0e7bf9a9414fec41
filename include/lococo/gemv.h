// Matrix-vector products for decoding: y = W x for one token.
//
// Generation reads every weight matrix once per token, so its speed is the
// rate at which W streams from memory. Measured on the 2-core development
// machine: OpenBLAS's sgemv (torch::mv / addmv) streams fp32 near the memory
// limit, but libtorch has no bf16 matrix-vector product that does: linear()
// with one bf16 row goes through oneDNN's GEMM at roughly half the bytes/s.
// These kernels read W in its stored dtype (fp32 or bf16, widened to fp32 in
// registers, so the sum is accumulated in fp32 exactly as for fp32 weights),
// four rows at a time against one x vector, the rows split across the
// intra-op threads. Variants for AVX-512, AVX2+FMA and portable code are
// compiled into the one binary and chosen at run time (cpu_features.h).
//
// bench/bench_gemv.cpp measures them against addmv and linear per shape and
// dtype; matvec_kernel() below is the one place that picks a kernel. Measured
// on the development machine (2 threads, 1B shapes, idle): fp32 gemv 28-34
// GB/s vs OpenBLAS sgemv 39-46 GB/s, so fp32 stays on OpenBLAS; bf16 gemv
// 22-28 GB/s vs oneDNN linear 19-20 GB/s (and 1.4x in whole-model decoding).
#pragma once

#include <cstdint>

#include <torch/torch.h>

namespace lococo {

// Which implementation computes W x for a weight (chosen by dtype, measured).
enum class MatvecKernel {
  Blas,    // at::addmv_out (OpenBLAS sgemv): fp32 only
  Simd,    // gemv() below: fp32 or bf16
};

// True when gemv() accepts `w`: a contiguous 2-D CPU tensor, fp32 or bf16.
bool gemv_supported(const torch::Tensor& w);

// y [rows] = W [rows, cols] x [cols]; x and y fp32, not aliasing W.
// Throws std::invalid_argument when !gemv_supported(w).
void gemv(const torch::Tensor& w, const float* x, float* y);

// The kernel decode uses for this weight: gemv for bf16, OpenBLAS for fp32
// unless LOCOCO_MATVEC=simd asks for gemv (for side-by-side measurement).
MatvecKernel matvec_kernel(const torch::Tensor& w);

}  // namespace lococo
