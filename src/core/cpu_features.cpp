#include "lococo/core/cpu_features.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace lococo {
namespace {

// ---- detection ---------------------------------------------------------------
// __builtin_cpu_supports checks both the CPUID bits and that the OS saves the
// wide registers (XGETBV), so a "yes" here is safe to execute.
CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  return f;
}

// ---- the cap ---------------------------------------------------------------------
// Initialised from LOCOCO_SIMD so a whole run (tests, benchmarks, the CLI) can
// be pinned to a narrower variant without recompiling.
SimdLevel initial_cap() {
  const char* env = std::getenv("LOCOCO_SIMD");
  if (!env || !*env) return SimdLevel::Avx512Bf16;
  try {
    return parse_simd_level(env);
  } catch (const std::invalid_argument&) {
    return SimdLevel::Avx512Bf16;  // an unknown value must not stop the program; it means "no cap"
  }
}

std::atomic<SimdLevel>& cap() {
  static std::atomic<SimdLevel> c{initial_cap()};
  return c;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

SimdLevel detected_simd_level() {
  const CpuFeatures& f = cpu_features();
  if (f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx2 && f.fma)
    return f.avx512bf16 ? SimdLevel::Avx512Bf16 : SimdLevel::Avx512;
  if (f.avx2 && f.fma) return SimdLevel::Avx2;
  return SimdLevel::Scalar;
}

SimdLevel active_simd_level() { return std::min(detected_simd_level(), cap().load()); }

void set_simd_level_cap(SimdLevel level) { cap() = level; }

std::string to_string(SimdLevel level) {
  switch (level) {
    case SimdLevel::Scalar: return "scalar";
    case SimdLevel::Avx2: return "avx2";
    case SimdLevel::Avx512: return "avx512";
    case SimdLevel::Avx512Bf16: return "avx512bf16";
  }
  return "unknown";
}

SimdLevel parse_simd_level(const std::string& name) {
  if (name == "scalar") return SimdLevel::Scalar;
  if (name == "avx2") return SimdLevel::Avx2;
  if (name == "avx512") return SimdLevel::Avx512;
  if (name == "avx512bf16") return SimdLevel::Avx512Bf16;
  throw std::invalid_argument("unknown SIMD level '" + name + "' (expected scalar, avx2, avx512 or avx512bf16)");
}

std::string blas_threading() {
  // Looked up at run time: OpenBLAS is libtorch's dependency, not ours to link.
  using GetParallel = int (*)();
  const auto get = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  if (!get) return "unknown";
  switch (get()) {
    case 0: return "sequential";
    case 1: return "pthreads";
    case 2: return "openmp";
    default: return "unknown";
  }
}

}  // namespace lococo
