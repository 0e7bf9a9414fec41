// Cost of one compression against one chunk forward, per layer.
//
// At steady state a bounded cache with B > b compresses once per chunk (L = M + B
// stored slots -> M), so compression / forward is the share a policy adds to
// every chunk. Target (issue 3): lococo adds at most 15% at M = B = 512.
//
// Shapes: "tiny" (the bundled model's layer: hidden 256, 8 heads, 4 KV heads,
// head_dim 32) and "1b" (hidden 2048, 32 heads, 8 KV heads, head_dim 64, FFN 8192).
// Each is a one-layer model; the forward runs over M cached slots plus B new
// tokens and computes the column sums lococo asks for.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "kv/slot_cache.h"
#include "lococo/kv/compressor.h"
#include "lococo/kv/cache.h"
#include "lococo/kv/lococo.h"
#include "lococo/model/model.h"
#include "lococo/model/weights.h"
#include "ratio_reporter.h"

namespace lococo {
namespace {

struct Shape {
  std::string name;
  int64_t hidden, heads, kv_heads, head_dim, ffn;
};

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {{"tiny", 256, 8, 4, 32, 704}, {"1b", 2048, 32, 8, 64, 8192}};
  return s;
}

ModelConfig one_layer(const Shape& s) {
  ModelConfig c;
  c.vocab_size = 256;  // small: the LM head is not what is measured
  c.hidden_size = s.hidden;
  c.intermediate_size = s.ffn;
  c.num_layers = 1;
  c.num_heads = s.heads;
  c.num_kv_heads = s.kv_heads;
  c.head_dim = s.head_dim;
  c.max_position_embeddings = 1 << 20;
  return c;
}

CacheOptions lococo_options(const std::string& policy, int64_t M, int64_t B) {
  CacheOptions o;
  o.policy = policy;
  o.budget = M;
  o.chunk = B;
  o.lococo.allow_untrained = true;
  return o;
}

// Holds M slots forever: prepare() drops the previous chunk at no cost, so each
// forward sees exactly M cached slots + B new tokens (steady state, no compression).
class ReplayCache final : public SlotCache {
 public:
  ReplayCache(const ModelConfig& c, const CacheOptions& o) : SlotCache(c, o, o.budget + o.chunk) {}
  std::string describe() const override { return "replay"; }

 protected:
  void prepare(int i, int64_t) override { layer(i).len = std::min(layer(i).len, options_.budget); }
  AttentionStatsRequest stats_request(int) const override {
    AttentionStatsRequest r;
    r.column_sums = true;  // what lococo asks of attention
    return r;
  }
  void observe(int, const AttentionStats&) override {}
};

void chunk_forward(benchmark::State& state, const Shape& shape, int64_t M, int64_t B) {
  torch::NoGradGuard no_grad;
  const ModelConfig config = one_layer(shape);
  LlamaModel model(config, init_weights(config, 1));
  ReplayCache cache(config, lococo_options("full", M, B));
  auto gen = at::detail::createCPUGenerator(2);
  model.forward(torch::randint(config.vocab_size, {M}, gen, torch::kInt64), &cache, LogitsFor::Last);
  auto chunk = torch::randint(config.vocab_size, {B}, gen, torch::kInt64);  // [B]
  for (auto _ : state) benchmark::DoNotOptimize(model.forward(chunk, &cache, LogitsFor::Last));
}

// One layer's compression of L = M + B stored slots to M, through the cache.
void compression(benchmark::State& state, const Shape& shape, const std::string& policy, int64_t M, int64_t B) {
  torch::NoGradGuard no_grad;
  const ModelConfig config = one_layer(shape);
  auto cache = make_cache(config, lococo_options(policy, M, B));
  auto gen = at::detail::createCPUGenerator(3);
  auto kv = torch::randn({config.num_kv_heads, M + B, config.head_dim}, gen);  // [Hkv, M + B, d]
  AttentionStats stats;
  stats.column_sums = torch::rand({config.num_kv_heads, M + B}, gen);         // [Hkv, M + B]
  for (auto _ : state) {
    state.PauseTiming();
    cache->reset();  // also forgets the chunk below, left open on purpose
    {
      CacheChunk fill = cache->begin_chunk(M + B);
      fill.layer(0).append(kv, kv, kv);
      fill.layer(0).observe(stats);
      fill.end();
    }
    state.ResumeTiming();
    CacheChunk timed = cache->begin_chunk(B);  // L = M + B > M + b: compresses to M
  }
  if (cache->slots(0) != M) state.SkipWithError("no compression happened");
}

std::string key(const std::string& what, const Shape& s, int64_t M, int64_t B) {
  return what + "/" + s.name + "/M" + std::to_string(M) + "/B" + std::to_string(B);
}

}  // namespace
}  // namespace lococo

int main(int argc, char** argv) {
  using namespace lococo;
  const std::vector<int64_t> sizes = {128, 512};
  for (const auto& s : shapes())
    for (int64_t M : sizes)
      for (int64_t B : sizes) {
        benchmark::RegisterBenchmark(key("forward", s, M, B).c_str(), chunk_forward, s, M, B)
            ->Unit(benchmark::kMillisecond)->UseRealTime();
        for (const std::string policy : {"lococo", "lococo-hh"})
          benchmark::RegisterBenchmark(key(policy, s, M, B).c_str(), compression, s, policy, M, B)
              ->Unit(benchmark::kMillisecond)->UseRealTime();
      }
  benchmark::Initialize(&argc, argv);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  std::printf("\nOne compression (L = M + B -> M) per chunk forward, one layer, %d threads:\n",
              torch::get_num_threads());
  std::printf("%-6s %5s %5s %12s %12s %8s %12s %8s\n", "shape", "M", "B", "forward ms", "lococo ms", "ratio",
              "lococo-hh ms", "ratio");
  for (const auto& s : shapes())
    for (int64_t M : sizes)
      for (int64_t B : sizes) {
        auto& t = reporter.seconds;
        const auto f = t.find(key("forward", s, M, B)), c = t.find(key("lococo", s, M, B)),
                   h = t.find(key("lococo-hh", s, M, B));
        if (f == t.end() || c == t.end() || h == t.end()) continue;  // filtered out
        std::printf("%-6s %5ld %5ld %12.3f %12.3f %7.1f%% %12.3f %7.1f%%\n", s.name.c_str(), static_cast<long>(M),
                    static_cast<long>(B), 1e3 * f->second, 1e3 * c->second, 100 * c->second / f->second,
                    1e3 * h->second, 100 * h->second / f->second);
      }
  benchmark::Shutdown();
  return 0;
}
