#include "lococo/eval/machine_limits.h"

#include <algorithm>
#include <chrono>

#include "core/host_memory.h"

namespace lococo {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Best of `reps` timings of `f`, in seconds.
template <class F>
double best_time(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

}  // namespace

double gemm_gflop_s(torch::Dtype dtype) {
  const int64_t n = 2048;
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  torch::mm(a, b);  // warm-up (oneDNN primitive creation)
  const double t_mm = best_time(3, [&] { torch::mm(a, b); });
  return 2.0 * n * n * n / t_mm / 1e9;
}

ReadProbe::ReadProbe() : buffer_(empty_weight_tensor({64, 1 << 20}, torch::kFloat32).fill_(1)) {}

double ReadProbe::gb_s() {
  torch::NoGradGuard g;
  const auto t0 = Clock::now();
  buffer_.sum().item<float>();
  return static_cast<double>(buffer_.nbytes()) / seconds_since(t0) / 1e9;
}

double ReadProbe::best_gb_s(int reps) {
  double best = 0;
  for (int r = 0; r < reps; ++r) best = std::max(best, gb_s());
  return best;
}

double measure_read_bandwidth() { return ReadProbe().best_gb_s(5); }

MachineLimits measure_machine_limits(torch::Dtype dtype, torch::Dtype attention_dtype) {
  torch::NoGradGuard g;
  MachineLimits m;
  m.dtype = dtype;
  m.attention_dtype = attention_dtype;
  m.bandwidth_gb_s = measure_read_bandwidth();
  m.gemm_gflop_s = gemm_gflop_s(dtype);
  m.attention_gflop_s = attention_dtype == dtype ? m.gemm_gflop_s : gemm_gflop_s(attention_dtype);
  return m;
}

}  // namespace lococo
