// Plain vs fused attention, side by side in one run:
//   (a) a full training step of the tiny 6.5M model (6 layers, hidden 256, 8
//       heads of 32, 4 KV heads, MLP 688, vocab 4096) at T = 1024, 2048 (and
//       4096, fast only: plain needs gigabytes there): tokens/s and peak RSS;
//   (a') the attention alone, forward + backward, at those shapes;
//   (b) inference chunk attention, chunk 128 over caches of 128, 512, 4096,
//       with and without the column-sum statistics the LoCoCo/H2O caches read,
//       and chunk 1 (decoding) for reference.
// After the runs, a table of plain/fast time ratios is printed.
//   build-attn/bench_attention --benchmark_out=out/bench/bench_attention.json --benchmark_out_format=json
// Pin the SIMD variant with LOCOCO_SIMD=scalar|avx2|avx512, the thread count with LOCOCO_THREADS.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "lococo/ops/attention.h"
#include "lococo/core/cpu_features.h"
#include "lococo/model/model.h"
#include "lococo/train/train.h"
#include "lococo/model/weights.h"

namespace {

using namespace lococo;

// ---- memory -----------------------------------------------------------------------------
// A field of /proc/self/status in MiB (VmRSS now, VmHWM the peak), -1 if unknown.
double status_mib(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream in(line.substr(key.size() + 1));
      double kb = 0;
      in >> kb;
      return kb / 1024.0;
    }
  return -1;
}

// Resets VmHWM to the current RSS (Linux >= 4.0), so each benchmark reports its own peak.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return f.good();
}

AttentionKernel kernel_of(int64_t fast) { return fast ? AttentionKernel::Auto : AttentionKernel::Plain; }

// ---- (a) training step ---------------------------------------------------------------------
ModelConfig tiny_6_5m() {  // configs/tiny-6.5m.json
  ModelConfig c;
  c.vocab_size = 4096, c.hidden_size = 256, c.intermediate_size = 688, c.num_layers = 6;
  c.num_heads = 8, c.num_kv_heads = 4, c.head_dim = 32;
  c.max_position_embeddings = 4096, c.rms_norm_eps = 1e-5, c.tie_word_embeddings = true;
  return c;
}

void BM_TrainStep(benchmark::State& state) {
  const int64_t T = state.range(1);
  set_default_attention_kernel(kernel_of(state.range(0)));
  const ModelConfig c = tiny_6_5m();
  LlamaModel model(c, init_weights(c, 0));
  std::vector<torch::Tensor*> params;
  for (auto& [name, t] : model.mutable_weights().named(c)) {
    t->requires_grad_(true);
    params.push_back(t);
  }
  auto tokens = torch::randint(c.vocab_size, {1, T + 1}, torch::kInt64);  // [1, T + 1]
  auto step = [&] {
    auto logits = model.forward(tokens.narrow(1, 0, T), nullptr);  // [1, T, V]
    next_token_loss(logits, tokens.narrow(1, 1, T)).backward();
    for (auto* p : params) p->mutable_grad() = torch::Tensor();
  };
  step();  // warm-up: first-touch allocations, thread pool start
  const bool reset = reset_peak_rss();
  const double rss_before = status_mib("VmRSS");
  for (auto _ : state) step();
  set_default_attention_kernel(AttentionKernel::Auto);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_rss_MiB"] = status_mib("VmHWM");
  if (reset) state.counters["step_peak_over_rss_MiB"] = status_mib("VmHWM") - rss_before;
  state.SetLabel(std::string(state.range(0) ? "fast" : "plain") + " train T=" + std::to_string(T) + " " +
                 to_string(active_simd_level()));
}

BENCHMARK(BM_TrainStep)
    ->ArgNames({"fast", "T"})
    ->Args({0, 1024})
    ->Args({1, 1024})
    ->Args({0, 2048})
    ->Args({1, 2048})
    ->Args({1, 4096})
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- (a') the attention alone, forward + backward, at the training shapes ------------------------
void BM_AttentionTrain(benchmark::State& state) {
  const int64_t T = state.range(1), Hq = 8, Hkv = 4, d = 32;
  const AttentionKernel kernel = kernel_of(state.range(0));
  auto q = torch::randn({1, Hq, T, d}).requires_grad_(true), k = torch::randn({1, Hkv, T, d}).requires_grad_(true);
  auto v = torch::randn({1, Hkv, T, d}).requires_grad_(true), upstream = torch::randn({1, Hq, T, d});
  for (auto _ : state) {
    (attention(q, k, v, {}, nullptr, kernel) * upstream).sum().backward();
    q.mutable_grad() = k.mutable_grad() = v.mutable_grad() = torch::Tensor();
  }
  // Causal: T(T+1)/2 visible pairs; forward 2 matmuls, backward 5, 2 * d FLOPs each per pair and head.
  const double pairs = T * (T + 1) / 2.0;
  state.counters["GFLOP/s"] = benchmark::Counter(7 * 2.0 * pairs * Hq * d * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(state.range(0) ? "fast" : "plain") + " attention fwd+bwd T=" + std::to_string(T));
}

BENCHMARK(BM_AttentionTrain)
    ->ArgNames({"fast", "T"})
    ->ArgsProduct({{0, 1}, {1024, 2048}})
    ->MinTime(0.5)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- (b) inference chunk attention -----------------------------------------------------------
void BM_ChunkAttention(benchmark::State& state) {
  const int64_t T = state.range(3), cache = state.range(1), S = cache + T, Hq = 8, Hkv = 4, d = 32;
  const AttentionKernel kernel = kernel_of(state.range(0));
  AttentionStatsRequest request;
  request.column_sums = state.range(2) != 0;
  torch::NoGradGuard g;
  auto q = torch::randn({1, Hq, T, d}), k = torch::randn({1, Hkv, S, d}), v = torch::randn({1, Hkv, S, d});
  for (auto _ : state) {
    AttentionStats stats;
    auto out = attention(q, k, v, request, &stats, kernel);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  const double pairs = static_cast<double>(T) * cache + T * (T + 1) / 2.0;  // visible (query, key) pairs
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * pairs * Hq * d * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(state.range(0) ? "fast" : "plain") + " chunk " + std::to_string(T) + " cache " + std::to_string(cache) +
                 (request.column_sums ? " +column sums" : ""));
}

BENCHMARK(BM_ChunkAttention)
    ->ArgNames({"fast", "cache", "stats", "chunk"})
    ->ArgsProduct({{0, 1}, {128, 512, 4096}, {0, 1}, {128}})
    ->ArgsProduct({{0, 1}, {512, 4096}, {0}, {1}})  // decoding: one query
    ->MinTime(0.2)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// ---- ratios ------------------------------------------------------------------------------------------
// The console output plus, at the end, plain time / fast time for every pair.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs)
      if (r.run_type == Run::RT_Iteration && !r.error_occurred) seconds_[r.benchmark_name()] = r.GetAdjustedRealTime();
  }
  void Finalize() override {
    std::printf("\nplain / fast time (speed-up of the fused kernel):\n");
    for (const auto& [name, t] : seconds_) {
      const auto at = name.find("fast:0");
      if (at == std::string::npos) continue;
      std::string fast = name;
      fast.replace(at, 6, "fast:1");
      const auto it = seconds_.find(fast);
      if (it != seconds_.end()) std::printf("  %-52s %6.2fx\n", fast.c_str(), t / it->second);
    }
    ConsoleReporter::Finalize();
  }

 private:
  std::map<std::string, double> seconds_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // Like the CLI: one intra-op thread per core (libtorch's default may be fewer); LOCOCO_THREADS overrides.
  const char* threads = std::getenv("LOCOCO_THREADS");
  torch::set_num_threads(threads ? std::atoi(threads) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  std::printf("SIMD level: %s, intra-op threads: %d\n", to_string(active_simd_level()).c_str(), at::get_num_threads());
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
