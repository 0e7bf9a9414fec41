#include "lococo/eval/bench.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "lococo/core/cpu_features.h"
#include "lococo/model/decode.h"
#include "core/host_memory.h"
#include "lococo/core/io_util.h"
#include "lococo/core/memory_stats.h"
#include "lococo/core/plot.h"
#include "lococo/generate/sampler.h"
#include "lococo/core/progress.h"

namespace lococo {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Bytes of weights one token's forward reads: every matrix of every layer and
// the LM head (the embedding table only when it is the tied LM head).
int64_t weight_bytes_per_token(const LlamaWeights& w) {
  auto bytes = [](const torch::Tensor& t) { return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0; };
  int64_t total = bytes(w.lm_head) + bytes(w.final_norm);
  for (const auto& l : w.layers)
    for (const Linear* m : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) total += bytes(m->weight) + bytes(m->bias);
  return total;
}

// Multiply-adds x 2 of one token's matmuls with the weights.
double matmul_flops_per_token(const LlamaWeights& w) {
  double matmul = static_cast<double>(w.lm_head.numel());
  for (const auto& l : w.layers)
    for (const Linear* m : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) matmul += m->weight.numel();
  return 2 * matmul;
}

// Multiply-adds x 2 of one token's attention over `slots` keys (scores and the weighted sum).
double attention_flops_per_token(const ModelConfig& c, double slots) {
  return 4.0 * c.num_layers * c.num_heads * c.head_dim * slots;
}

int64_t kv_bytes_read(const ModelConfig& c, int64_t slots, torch::Dtype dtype) {
  return 2 * c.num_layers * c.num_kv_heads * c.head_dim * slots * static_cast<int64_t>(c10::elementSize(dtype));
}

// Feeds `n` seeded random token ids through the model in chunks.
void fill_with_model(const LlamaModel& model, KvCache& cache, int64_t n, int64_t chunk, std::mt19937_64& rng,
                     const std::function<void(int64_t)>& on_chunk) {
  torch::NoGradGuard g;
  std::uniform_int_distribution<int64_t> id(3, model.config().vocab_size - 1);
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t len = std::min(chunk, n - s);
    std::vector<int64_t> ids(len);
    for (auto& t : ids) t = id(rng);
    model.forward(torch::tensor(ids, torch::kInt64), &cache, LogitsFor::Last);
    on_chunk(len);
  }
}

// The median of `v` (of its two middle values when even); 0 when empty.
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t mid = v.size() / 2;
  return v.size() % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

// `n` calls of `step`, each timed alone; `between()` runs untimed before the
// first and after each, and its values are kept beside the calls' times.
struct TokenTimes {
  std::vector<double> seconds;  // [n] one call each
  std::vector<double> beside;   // [n + 1] between()'s values, call i between i and i + 1 (empty without between)
  // Tokens/s: from the median time (the headline: a shared machine's bursts
  // of contention, and a cache's compression landing on one of few tokens,
  // move it least) and tokens / total time.
  double median_rate() const { return 1.0 / median(seconds); }
  double mean_rate() const {
    double total = 0;
    for (double s : seconds) total += s;
    return static_cast<double>(seconds.size()) / total;
  }
};
template <class Step>
TokenTimes time_tokens(int64_t n, Step&& step, const std::function<double()>& between,
                       const std::function<void(int64_t)>& tick) {
  TokenTimes times;
  if (between) times.beside.push_back(between());
  for (int64_t i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    step();
    times.seconds.push_back(seconds_since(t0));
    if (between) times.beside.push_back(between());
    tick(1);
  }
  return times;
}

// The median over generated tokens of (bytes / the token's time) over the
// better of the bandwidths read just before and just after it: each token held
// to the machine of its moment (and to the faster of its two neighbours, as a
// single read can land on a burst of another tenant's traffic).
double median_bandwidth_fraction(const TokenTimes& t, double bytes_per_token) {
  std::vector<double> fractions;
  for (size_t i = 0; i < t.seconds.size() && i + 1 < t.beside.size(); ++i)
    fractions.push_back(bytes_per_token / t.seconds[i] / (std::max(t.beside[i], t.beside[i + 1]) * 1e9));
  return median(fractions);
}


// The time GEMMs at these rates (GFLOP/s; weights in their dtype, attention
// in the cache's) allow a prompt token attending `slots` keys, over the time
// one took at `tokens_per_second`.
double gemm_fraction(const LlamaModel& model, double tokens_per_second, double slots, double weights_gflop_s,
                     double attention_gflop_s) {
  const double limit_seconds = matmul_flops_per_token(model.weights()) / (weights_gflop_s * 1e9) +
                               attention_flops_per_token(model.config(), slots) / (attention_gflop_s * 1e9);
  return tokens_per_second * limit_seconds;
}

// GFLOP/s of the GEMMs in m's two dtypes, measured now: {weights', attention's}.
std::pair<double, double> gemm_rates_now(const MachineLimits& m) {
  const double weights = gemm_gflop_s(m.dtype);
  return {weights, m.attention_dtype == m.dtype ? weights : gemm_gflop_s(m.attention_dtype)};
}

}  // namespace

void fill_cache_random(const ModelConfig& c, KvCache& cache, int64_t tokens, int64_t chunk, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  for (int64_t s = 0; s < tokens; s += chunk) {
    const int64_t n = std::min(chunk, tokens - s);
    CacheChunk ch = cache.begin_chunk(n);
    for (int i = 0; i < c.num_layers; ++i) {
      CacheChunk::Layer layer = ch.layer(i);
      auto k = torch::randn({c.num_kv_heads, n, c.head_dim}, opts);  // [Hkv, n, d]
      auto v = torch::randn({c.num_kv_heads, n, c.head_dim}, opts);
      const int64_t S = layer.append(k, k, v).keys.size(1);
      const AttentionStatsRequest req = layer.stats_request();
      AttentionStats st;  // plausible probabilities: each query's row sums to 1
      if (req.column_sums) st.column_sums = torch::rand({c.num_kv_heads, S}, opts) * (2.0 * n / S);
      if (req.last_query) st.last_query = torch::softmax(torch::randn({c.num_kv_heads, S}, opts), -1);
      if (req.window > 0)
        st.window = torch::softmax(torch::randn({c.num_kv_heads, std::min(req.window, n), S}, opts), -1);
      layer.observe(st);
    }
    ch.end();
  }
}

BenchReport run_bench(const LoadedModel& m, const BenchOptions& o) {
  if (o.contexts.empty()) throw std::invalid_argument("--context: empty list");
  if (o.prompt <= 0 || o.gen <= 0) throw std::invalid_argument("--prompt and --gen must be positive");
  const LlamaModel& model = *m.model;
  const ModelConfig& c = model.config();
  BenchReport rep;
  rep.model = m.dir.string();
  rep.options = o;
  rep.dtype = dtype_name(model.weights().embed.scalar_type());
  rep.threads = torch::get_num_threads();
  rep.blas_threading = lococo::blas_threading();
  rep.weight_bytes = weight_bytes_per_token(model.weights());
  for (const auto& l : model.weights().layers)
    for (const Linear* x : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) rep.params += x->weight.numel();
  rep.params += model.weights().embed.numel() + (c.tie_word_embeddings ? 0 : model.weights().lm_head.numel());
  const auto dtype = model.weights().embed.scalar_type();
  const auto cache_dtype = o.cache.dtype == torch::kBFloat16 ? torch::kBFloat16 : torch::kFloat32;
  rep.machine = measure_machine_limits(dtype == torch::kBFloat16 ? torch::kBFloat16 : torch::kFloat32, cache_dtype);

  const auto runs = cache_runs(o.policies, {o.budget});
  {  // warm-up: the first forward pays for one-time set-up (allocator, kernels)
    auto warm = make_cache(c, run_cache_options(o.cache, {reference_policy(), 0}, m.dir));
    std::mt19937_64 rng(o.seed);
    fill_with_model(model, *warm, std::min<int64_t>(o.cache.chunk, 64), o.cache.chunk, rng, [](int64_t) {});
  }
  int64_t work = 0;
  for (int64_t d : o.contexts) work += d + o.prompt + o.gen;
  Progress bar("bench", work * static_cast<int64_t>(runs.size()), "tok", o.progress);
  int64_t done = 0;
  torch::NoGradGuard g;
  ReadProbe probe;  // the machine is shared: its bandwidth is read between generated tokens
  for (const auto& run : runs) {
    const CacheOptions co = run_cache_options(o.cache, run, m.dir);
    for (int64_t depth : o.contexts) {
      BenchPoint p{run, "", depth};
      reset_peak_rss();
      auto cache = make_cache(c, co);
      std::mt19937_64 rng(o.seed);
      auto tick = [&](int64_t n) { bar.set(done += n, fmt::format("{} depth {}", run.policy, depth)); };
      if (o.random_fill) {
        fill_cache_random(c, *cache, depth, co.chunk, o.seed);
        tick(depth);
      } else {
        fill_with_model(model, *cache, depth, co.chunk, rng, tick);
      }
      // The prompt, held to the better of the GEMM rates measured just before
      // and just after it (the machine is shared: its compute moves with the
      // load as its bandwidth does).
      const int64_t slots_before = cache->slots(0);
      const auto before = gemm_rates_now(rep.machine);
      auto t0 = Clock::now();
      fill_with_model(model, *cache, o.prompt, co.chunk, rng, tick);
      p.prompt_tokens_per_second = o.prompt / seconds_since(t0);
      p.slots = cache->slots(0);
      const auto after = gemm_rates_now(rep.machine);
      p.gemm_gflop_s = std::max(before.first, after.first);
      const double attention_gflop_s = std::max(before.second, after.second);
      const double prompt_slots = (slots_before + p.slots) / 2.0;  // mean keys a prompt token attends
      p.prompt_gemm_fraction =
          gemm_fraction(model, p.prompt_tokens_per_second, prompt_slots, p.gemm_gflop_s, attention_gflop_s);
      rep.machine.gemm_gflop_s = std::max(rep.machine.gemm_gflop_s, p.gemm_gflop_s);
      rep.machine.attention_gflop_s = std::max(rep.machine.attention_gflop_s, attention_gflop_s);
      // Generation: one token at a time, each the argmax of the last logits;
      // decode_step (what generate() uses) and, side by side, forward(). The
      // bandwidth is read before and after every token of the headline path.
      int64_t token = 0;
      const bool fast = decode_step_supported(model);
      const auto read = [&] { return probe.best_gb_s(2); };
      TokenTimes gen;
      if (fast) {
        DecodeState state(c);
        gen = time_tokens(o.gen, [&] { token = greedy_token(decode_step(model, *cache, token, state)); }, read, tick);
      }
      const TokenTimes forward = time_tokens(o.gen, [&] {
        auto logits = model.forward(torch::tensor({token}), cache.get(), LogitsFor::Last);  // [1, 1, V]
        token = greedy_token(logits.reshape({-1}));
      }, fast ? std::function<double()>() : read, tick);
      if (!fast) gen = forward;
      p.gen_forward_tokens_per_second = forward.median_rate();
      p.gen_tokens_per_second = gen.median_rate();
      p.gen_tokens_per_second_mean = gen.mean_rate();
      p.gen_bytes_per_token = rep.weight_bytes + kv_bytes_read(c, cache->slots(0), co.dtype);
      p.bandwidth_gb_s = median(gen.beside);
      p.gen_bandwidth_fraction = median_bandwidth_fraction(gen, p.gen_bytes_per_token);
      for (double b : gen.beside) rep.machine.bandwidth_gb_s = std::max(rep.machine.bandwidth_gb_s, b);
      p.cache = cache->describe();
      p.cache_bytes = cache->bytes();
      p.peak_rss_bytes = peak_rss_bytes();
      rep.points.push_back(p);
    }
  }
  bar.finish();
  for (auto& p : rep.points) {
    p.gen_bandwidth_fraction_of_best = p.gen_tokens_per_second * p.gen_bytes_per_token / (rep.machine.bandwidth_gb_s * 1e9);
  }
  return rep;
}

}  // namespace lococo
