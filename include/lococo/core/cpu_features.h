// Run-time CPU feature detection for the hand-vectorised kernels.
//
// The library is compiled for baseline x86-64 (or whatever the host compiler
// targets), so one binary runs everywhere; kernels compile extra variants for
// AVX2/FMA and AVX-512 (with `#pragma GCC target` / `__attribute__((target))`)
// and pick one at run time through `active_simd_level()`.
//
// The level can be capped, to test or benchmark the narrower variants on a
// machine that has the wider ones: `set_simd_level_cap(...)` or, at start-up,
// the environment variable LOCOCO_SIMD=scalar|avx2|avx512|avx512bf16.
#pragma once

#include <string>

namespace lococo {

// Ordered: a higher level implies the lower ones are also available.
enum class SimdLevel {
  Scalar = 0,  // portable code (the compiler's baseline vectors, e.g. SSE2 / NEON)
  Avx2 = 1,    // AVX2 + FMA
  Avx512 = 2,  // AVX-512 F/BW/DQ/VL
  Avx512Bf16 = 3,  // and AVX512_BF16's dot product of bf16 pairs (vdpbf16ps)
};

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512bf16 = false;
};

// What this CPU (and OS) supports, detected once.
const CpuFeatures& cpu_features();

// The widest level this CPU supports.
SimdLevel detected_simd_level();

// The level kernels should use now: min(detected, cap).
SimdLevel active_simd_level();

// Caps the level kernels use (SimdLevel::Avx512Bf16 = no cap). Thread-safe; takes
// effect on the next kernel call.
void set_simd_level_cap(SimdLevel cap);

std::string to_string(SimdLevel level);

// How the BLAS libtorch calls runs its threads: "openmp" (OpenBLAS sharing
// libtorch's OpenMP threads), "pthreads" (OpenBLAS with threads of its own,
// which keep spinning after each call beside libtorch's and take their cores),
// "sequential", or "unknown" (not OpenBLAS).
std::string blas_threading();

// Parses "scalar" | "avx2" | "avx512" | "avx512bf16"; throws std::invalid_argument otherwise.
SimdLevel parse_simd_level(const std::string& name);

}  // namespace lococo
