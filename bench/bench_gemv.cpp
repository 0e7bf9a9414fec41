// One token's matrix-vector products on the 1B shape (hidden 2048, MLP 5632,
// 4 KV heads of 64, vocab 32000): the kernels decode could use, side by side.
//
//   blas-f32     at::addmv_out, fp32 weights (OpenBLAS sgemv)
//   gemv-f32     lococo::gemv, fp32 weights
//   linear-bf16  torch::linear with one bf16 row (oneDNN)
//   gemv-bf16w   lococo::gemv, bf16 weights widened to fp32 in registers (the
//                AVX-512 variant without BF16: LOCOCO_SIMD=avx512)
//   gemv-bf16    lococo::gemv, bf16 weights and x by vdpbf16ps where the CPU
//                has AVX512_BF16 (the same as gemv-bf16w elsewhere)
//
// Every benchmark cycles through enough copies of its matrix (>= 512 MiB) that
// each product streams W from memory, as decoding does; two untimed passes
// over the copies come first. The table after the
// runs gives GB/s of weights read, that as a fraction of the machine's read
// bandwidth (measured the way `lococo bench` does), and gemv's speed-up over
// the library kernel of the same dtype (and of vdpbf16ps over widening).
//
//   build/bench_gemv [--benchmark_filter=...] [--benchmark_out=gemv.json --benchmark_out_format=json]
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "lococo/eval/bench.h"
#include "lococo/core/cpu_features.h"
#include "ops/gemv.h"
#include "core/host_memory.h"
#include "ratio_reporter.h"

namespace lococo {
namespace {

struct Shape {
  std::string name;
  int64_t rows, cols;
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {
      {"q_o", 2048, 2048}, {"k_v", 256, 2048}, {"gate_up", 5632, 2048}, {"down", 2048, 5632}, {"lm_head", 32000, 2048}};
  return s;
}

const std::vector<std::string>& kernels() {
  static const std::vector<std::string> k = {"blas-f32", "gemv-f32", "linear-bf16", "gemv-bf16w", "gemv-bf16"};
  return k;
}

bool is_bf16(const std::string& kernel) { return kernel.find("bf16") != std::string::npos; }

void matvec(benchmark::State& state, const Shape& shape, const std::string& kernel) {
  torch::NoGradGuard no_grad;
  // gemv-bf16w: the widest variant below AVX512_BF16's dot product.
  set_simd_level_cap(kernel == "gemv-bf16w" ? std::min(detected_simd_level(), SimdLevel::Avx512) : SimdLevel::Avx512Bf16);
  const auto dtype = is_bf16(kernel) ? torch::kBFloat16 : torch::kFloat32;
  const int64_t bytes = shape.rows * shape.cols * static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t copies = std::max<int64_t>(2, (512LL << 20) / bytes);
  std::vector<torch::Tensor> w;  // copies x [rows, cols]
  for (int64_t i = 0; i < copies; ++i)  // in weight memory, as a loaded model has it (host_memory.h)
    w.push_back(empty_weight_tensor({shape.rows, shape.cols}, dtype).copy_(torch::randn({shape.rows, shape.cols})));
  auto x = torch::randn({shape.cols});           // [cols] fp32
  auto y = torch::empty({shape.rows});           // [rows] fp32
  auto x_row = x.to(dtype).view({1, shape.cols});  // [1, cols] for linear
  auto product = [&](const torch::Tensor& W) {
    if (kernel == "blas-f32")
      at::addmv_out(y, y, W, x, 0, 1);
    else if (kernel == "linear-bf16")
      benchmark::DoNotOptimize(torch::linear(x_row, W));
    else
      gemv(W, x.data_ptr<float>(), y.data_ptr<float>());
  };
  for (int pass = 0; pass < 2; ++pass)  // warm-up: the first passes over fresh memory run far slower
    for (const auto& W : w) product(W);
  int64_t i = 0;
  for (auto _ : state) {
    product(w[i++ % copies]);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}

std::string key(const Shape& s, const std::string& kernel) { return s.name + "/" + kernel; }

}  // namespace
}  // namespace lococo

int main(int argc, char** argv) {
  using namespace lococo;
  // As the CLI does by default: one intra-op thread per core (gemv splits rows
  // across them; OpenBLAS and oneDNN use their own pools).
  torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  for (const auto& s : shapes())
    for (const auto& k : kernels())
      benchmark::RegisterBenchmark(key(s, k).c_str(), matvec, s, k)->Unit(benchmark::kMicrosecond)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  const double bandwidth = measure_machine_limits().bandwidth_gb_s;
  std::printf("\nWeights streamed per product (GB/s; %% of the %.1f GB/s read bandwidth), %d threads:\n", bandwidth,
              torch::get_num_threads());
  std::printf("%-8s", "shape");
  for (const auto& k : kernels()) std::printf(" %18s", k.c_str());
  std::printf(" %10s %10s %10s\n", "f32 gain", "bf16 gain", "dp gain");
  for (const auto& s : shapes()) {
    bool measured = false;
    for (const auto& k : kernels()) measured = measured || reporter.of(key(s, k)) > 0;
    if (!measured) continue;  // filtered out
    std::printf("%-8s", s.name.c_str());
    for (const auto& k : kernels()) {
      const double sec = reporter.of(key(s, k));
      const double gb_s = sec > 0 ? s.rows * s.cols * (is_bf16(k) ? 2.0 : 4.0) / sec / 1e9 : 0;
      std::printf(" %9.1f (%5.1f%%)", gb_s, 100 * gb_s / bandwidth);
    }
    const auto gain = [&](const std::string& ours, const std::string& lib) {
      const double a = reporter.of(key(s, ours)), b = reporter.of(key(s, lib));
      return a > 0 && b > 0 ? b / a : 0.0;
    };
    std::printf(" %9.2fx %9.2fx %9.2fx\n", gain("gemv-f32", "blas-f32"), gain("gemv-bf16", "linear-bf16"),
                gain("gemv-bf16", "gemv-bf16w"));
  }
  benchmark::Shutdown();
  return 0;
}
