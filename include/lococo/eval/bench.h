// `lococo bench`: prompt-processing and generation speed at a given context
// depth per KV-cache policy (like llama-bench's -d), with the machine's own
// limits (memory bandwidth, fp32 GEMM rate) measured once so that every result
// is also a fraction of what the hardware allows.
//
// report.json:
//   {"kind": "bench", "model": str, "params": int, "weight_bytes": int, "dtype": str,
//    "threads": int, "blas_threading": str (cpu_features.h), "prompt": int, "gen": int, "chunk": int, "fill": str,
//    "machine": {"bandwidth_gb_s": num, "gemm_gflop_s": num, "attention_gflop_s": num,
//                "attention_dtype": str, "gemm_dtype": str},
//    "points": [{"policy": str, "budget": int, "cache": str, "depth": int, "slots": int,
//                "prompt_tokens_per_second": num,
//                "gen_tokens_per_second": num (1 / the median time of one token),
//                "gen_tokens_per_second_mean": num (tokens / total time),
//                "gen_forward_tokens_per_second": num (the same through forward(), for comparison),
//                "prompt_gemm_fraction": num (the time the GEMM rates allow the prompt's matmul flops,
//                   in the weights' dtype, and attention flops, in the cache's, over the time taken; the
//                   rates: the better of those measured just before and just after the prompt),
//                "gemm_gflop_s": num (that rate in the weights' dtype),
//                "bandwidth_gb_s": num (the median of the read bandwidths measured between
//                   generated tokens),
//                "gen_bandwidth_fraction": num (the median over generated tokens of the weights + K/V
//                   a token reads / its time / the better of the reads just before and after it),
//                "gen_bandwidth_fraction_of_best": num (the same over machine.bandwidth_gb_s),
//                "cache_bytes": int, "peak_rss_bytes": int}]}
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lococo/eval/eval.h"
#include "lococo/eval/machine_limits.h"
#include "lococo/kv/cache.h"
#include "lococo/kv/registry.h"
#include "lococo/model/model.h"

namespace lococo {

struct BenchOptions {
  std::vector<int64_t> contexts = {1024, 4096};  // depths: tokens already in the cache
  std::vector<std::string> policies = {reference_policy(), trained_policy()};
  int64_t budget = 512;                      // M of the bounded policies
  int64_t prompt = 512;                      // prompt tokens timed at each depth
  int64_t gen = 32;                          // generated tokens timed at each depth
  bool random_fill = false;                  // fill by driving the cache with random K/V (no model)
  uint64_t seed = 0;                         // token ids / random K/V of the fill
  CacheOptions cache;                        // chunk, positions, the policies' knobs
  bool progress = true;
};

struct BenchPoint {
  CacheRun run;
  std::string cache;
  int64_t depth = 0, slots = 0;
  double prompt_tokens_per_second = 0, gen_tokens_per_second = 0;  // generation: decode_step where supported
  double gen_forward_tokens_per_second = 0;                         // generation through forward()
  double gen_tokens_per_second_mean = 0;  // tokens / total time (gen_tokens_per_second: 1 / median token time)
  double prompt_gemm_fraction = 0;  // against the GEMM rates measured beside the prompt
  double gemm_gflop_s = 0;          // the weights' dtype's, the better of just before and just after the prompt
  // A shared machine's bandwidth moves from minute to minute, so each token
  // of a point's generation is held to the bandwidth read just before and after it
  // (and, stricter, the point's tokens/s to the best read in the whole run).
  double bandwidth_gb_s = 0;  // median of the reads between generated tokens
  double gen_bandwidth_fraction = 0, gen_bandwidth_fraction_of_best = 0;
  double gen_bytes_per_token = 0;  // weights + the K/V a generated token reads
  int64_t cache_bytes = 0, peak_rss_bytes = 0;
};

struct BenchReport {
  std::string model;
  int64_t params = 0, weight_bytes = 0;
  std::string dtype;
  int threads = 0;
  std::string blas_threading;  // blas_threading() of cpu_features.h
  BenchOptions options;
  MachineLimits machine;
  std::vector<BenchPoint> points;
  nlohmann::json to_json() const;
};

BenchReport run_bench(const LoadedModel& model, const BenchOptions& options);

// Drives `cache` through `tokens` positions in chunks with random keys, values
// and attention statistics instead of the model (the policy's own code runs:
// selection, compression, positions), for deep contexts on big models.
void fill_cache_random(const ModelConfig& config, KvCache& cache, int64_t tokens, int64_t chunk, uint64_t seed);

std::string to_markdown(const BenchReport& report);
// report.json, report.md and bench.png (tokens/s and memory vs depth per policy).
std::vector<std::filesystem::path> write_report(const BenchReport& report, const std::filesystem::path& dir);

}  // namespace lococo
