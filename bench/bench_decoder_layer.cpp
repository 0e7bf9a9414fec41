// One decoder layer forward (attention + MLP) for a chunk of 1 (decode) and 128
// (prefill) tokens, on the tiny shapes and on a 1B-shaped layer.
// Counters: GFLOP/s of the layer's matmuls and, for chunk 1, GB/s of weights read.
//   build/bench_decoder_layer --benchmark_out=out/bench_decoder_layer.json --benchmark_out_format=json
#include <benchmark/benchmark.h>

#include "lococo/kv/cache.h"
#include "lococo/model/model.h"

namespace {

using namespace lococo;

ModelConfig layer_config(bool big) {
  ModelConfig c;
  c.vocab_size = 256;  // the embedding is not part of what is measured
  c.num_layers = 1;
  if (big) {  // 1B-shaped (TinyLlama-like)
    c.hidden_size = 2048, c.intermediate_size = 5632, c.num_heads = 32, c.num_kv_heads = 8, c.head_dim = 64;
  } else {    // the bundled tiny model's shape
    c.hidden_size = 256, c.intermediate_size = 688, c.num_heads = 8, c.num_kv_heads = 4, c.head_dim = 32;
  }
  return c;
}

// Matmul FLOPs of one layer for T new tokens attending to `ctx` keys in all.
double layer_flops(const ModelConfig& c, int64_t T, int64_t ctx) {
  const double proj = 2.0 * T * c.hidden_size * (2 * c.q_dim() + 2 * c.kv_dim());
  const double mlp = 2.0 * T * 3 * c.hidden_size * c.intermediate_size;
  const double attn = 4.0 * T * ctx * c.q_dim();
  return proj + mlp + attn;
}

void BM_DecoderLayer(benchmark::State& state) {
  const bool big = state.range(0) != 0;
  const int64_t T = state.range(1);
  const int64_t context = 512;  // tokens already in the cache
  ModelConfig c = layer_config(big);
  LlamaModel model(c, init_weights(c, 0));
  torch::NoGradGuard g;
  CacheOptions o;
  o.chunk = context + T;
  auto cache = make_cache(c, o);
  auto prefix = torch::randint(c.vocab_size, {context}, torch::kInt64);
  auto chunk = torch::randint(c.vocab_size, {T}, torch::kInt64);
  // The embedding lookup and LM head of a 256-token vocabulary are a rounding
  // error next to the layer; they are included for simplicity.
  for (auto _ : state) {
    state.PauseTiming();
    cache->reset();
    model.forward(prefix, cache.get(), LogitsFor::Last);
    state.ResumeTiming();
    auto out = model.forward(chunk, cache.get(), LogitsFor::Last);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  const double flops = layer_flops(c, T, context + T);
  state.counters["GFLOPS"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  const double weight_bytes = (c.parameter_count() - 2.0 * c.vocab_size * c.hidden_size) * 4.0;
  state.counters["weights_GBps"] =
      benchmark::Counter(weight_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(big ? "1B-shaped" : "tiny") + " chunk " + std::to_string(T));
}

BENCHMARK(BM_DecoderLayer)->ArgsProduct({{0, 1}, {1, 128}})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
