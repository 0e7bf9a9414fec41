#include "lococo/bench.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "lococo/cpu_features.h"
#include "lococo/decode.h"
#include "lococo/host_memory.h"
#include "lococo/io_util.h"
#include "lococo/memory_stats.h"
#include "lococo/plot.h"
#include "lococo/sampler.h"
#include "lococo/progress.h"

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

double gemm_gflop_s(torch::Dtype dtype) {
  const int64_t n = 2048;
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  torch::mm(a, b);  // warm-up (oneDNN primitive creation)
  const double t_mm = best_time(3, [&] { torch::mm(a, b); });
  return 2.0 * n * n * n / t_mm / 1e9;
}

int64_t kv_bytes_read(const ModelConfig& c, int64_t slots, torch::Dtype dtype) {
  return 2 * c.num_layers * c.num_kv_heads * c.head_dim * slots * static_cast<int64_t>(c10::elementSize(dtype));
}

std::string dtype_name(torch::Dtype d) {
  return d == torch::kBFloat16 ? "bf16" : d == torch::kFloat16 ? "f16" : d == torch::kFloat64 ? "f64" : "f32";
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

}  // namespace

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

namespace {

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
    for (int i = 0; i < c.num_layers; ++i) {
      cache.prepare(i, n);
      auto k = torch::randn({c.num_kv_heads, n, c.head_dim}, opts);  // [Hkv, n, d]
      auto v = torch::randn({c.num_kv_heads, n, c.head_dim}, opts);
      const int64_t S = cache.append(i, k, k, v).keys.size(1);
      const AttentionStatsRequest req = cache.stats_request(i);
      AttentionStats st;  // plausible probabilities: each query's row sums to 1
      if (req.column_sums) st.column_sums = torch::rand({c.num_kv_heads, S}, opts) * (2.0 * n / S);
      if (req.last_query) st.last_query = torch::softmax(torch::randn({c.num_kv_heads, S}, opts), -1);
      if (req.window > 0)
        st.window = torch::softmax(torch::randn({c.num_kv_heads, std::min(req.window, n), S}, opts), -1);
      if (req.any()) cache.observe(i, st);
    }
    cache.end_chunk(n);
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
    auto warm = make_cache(c, run_cache_options(o.cache, {"full", 0}, m.dir));
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

// ---- Reports ------------------------------------------------------------------

nlohmann::json BenchReport::to_json() const {
  nlohmann::json pts = nlohmann::json::array();
  for (const auto& p : points)
    pts.push_back({{"policy", p.run.policy}, {"budget", p.run.budget}, {"cache", p.cache}, {"depth", p.depth},
                   {"slots", p.slots}, {"prompt_tokens_per_second", p.prompt_tokens_per_second},
                   {"gen_tokens_per_second", p.gen_tokens_per_second},
                   {"gen_tokens_per_second_mean", p.gen_tokens_per_second_mean},
                   {"gen_forward_tokens_per_second", p.gen_forward_tokens_per_second},
                   {"prompt_gemm_fraction", p.prompt_gemm_fraction}, {"gemm_gflop_s", p.gemm_gflop_s},
                   {"bandwidth_gb_s", p.bandwidth_gb_s}, {"gen_bandwidth_fraction", p.gen_bandwidth_fraction},
                   {"gen_bandwidth_fraction_of_best", p.gen_bandwidth_fraction_of_best}, {"cache_bytes", p.cache_bytes},
                   {"peak_rss_bytes", p.peak_rss_bytes}});
  return {{"kind", "bench"}, {"model", model}, {"params", params}, {"weight_bytes", weight_bytes}, {"dtype", dtype},
          {"threads", threads}, {"blas_threading", blas_threading}, {"prompt", options.prompt}, {"gen", options.gen}, {"chunk", options.cache.chunk},
          {"fill", options.random_fill ? "random-kv" : "model"},
          {"machine", {{"bandwidth_gb_s", machine.bandwidth_gb_s}, {"gemm_gflop_s", machine.gemm_gflop_s},
                       {"attention_gflop_s", machine.attention_gflop_s},
                       {"attention_dtype", dtype_name(machine.attention_dtype)},
                       {"gemm_dtype", dtype_name(machine.dtype)}}},
          {"points", pts}};
}

std::string to_markdown(const BenchReport& r) {
  std::ostringstream md;
  md << fmt::format("# lococo bench\n\nModel `{}`: {:.1f}M parameters, {} weights ({:.1f} MiB read per token), {} "
                    "threads (BLAS threading: {}); prompt {} tokens in chunks of {}, {} generated tokens; fill: {}.\n\n"
                    "Machine (best in the run): {:.1f} GB/s read bandwidth, {:.0f} GFLOP/s {} GEMM (2048^3; attention in {}: {:.0f}). "
                    "% GEMM peak: the time the GEMM rates measured just before and after a prompt (the better) allow its flops "
                    "over the time taken.\n\n",
                    r.model, r.params / 1e6, r.dtype, r.weight_bytes / 1048576.0, r.threads, r.blas_threading, r.options.prompt,
                    r.options.cache.chunk, r.options.gen, r.options.random_fill ? "random K/V" : "model", r.machine.bandwidth_gb_s,
                    r.machine.gemm_gflop_s, dtype_name(r.machine.dtype), dtype_name(r.machine.attention_dtype),
                    r.machine.attention_gflop_s);
  md << "Generation: tokens/s from the median time of one token (mean: tokens / total time). The read bandwidth "
        "is measured between generated tokens (GB/s column: the median); % bandwidth: the median over tokens of "
        "the bytes a token reads (weights + K/V) / its time / the better of the reads just before and after it; "
        "% of best: bytes per token x tokens/s over the best read in the run.\n\n";
  md << "| policy | depth | slots | prompt tok/s | % GEMM peak | gen tok/s | GB/s | % bandwidth | % of best | gen mean | "
        "gen via forward() | x forward() | KV cache (MiB) | peak RSS (MiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& p : r.points)
    md << fmt::format("| {} | {} | {} | {:.1f} | {:.0f}% | {:.2f} | {:.1f} | {:.0f}% | {:.0f}% | {:.2f} | {:.2f} | {:.2f} "
                      "| {:.1f} | {:.0f} |\n",
                      p.run.budget ? fmt::format("{} M={}", p.run.policy, p.run.budget) : p.run.policy, p.depth, p.slots,
                      p.prompt_tokens_per_second, 100 * p.prompt_gemm_fraction, p.gen_tokens_per_second, p.bandwidth_gb_s,
                      100 * p.gen_bandwidth_fraction, 100 * p.gen_bandwidth_fraction_of_best, p.gen_tokens_per_second_mean, p.gen_forward_tokens_per_second,
                      p.gen_tokens_per_second / p.gen_forward_tokens_per_second, p.cache_bytes / 1048576.0,
                      p.peak_rss_bytes / 1048576.0);
  return md.str();
}

std::vector<std::filesystem::path> write_report(const BenchReport& r, const std::filesystem::path& dir) {
  auto written = write_json_and_markdown(dir, r.to_json(), to_markdown(r));
  // Two panels: generation tokens/s and peak RSS against depth, one line per policy.
  std::ostringstream gp;
  std::vector<std::string> labels;
  for (const auto& p : r.points) {
    const std::string label = p.run.budget ? fmt::format("{} M={}", p.run.policy, p.run.budget) : p.run.policy;
    if (std::find(labels.begin(), labels.end(), label) == labels.end()) labels.push_back(label);
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    gp << "$p" << i << " << EOD\n";
    for (const auto& p : r.points)
      if ((p.run.budget ? fmt::format("{} M={}", p.run.policy, p.run.budget) : p.run.policy) == labels[i])
        gp << p.depth << " " << p.gen_tokens_per_second << " " << p.peak_rss_bytes / 1048576.0 << " "
           << p.prompt_tokens_per_second << "\n";
    gp << "EOD\n";
  }
  auto panel = [&](const std::string& title, const std::string& ylabel, int column) {
    gp << "set title " << gnuplot_quote(title) << "\nset ylabel " << gnuplot_quote(ylabel) << "\nplot ";
    for (size_t i = 0; i < labels.size(); ++i)
      gp << (i ? ", " : "") << "$p" << i << " using 1:" << column << " with linespoints title " << gnuplot_quote(labels[i]);
    gp << "\n";
  };
  gp << "set multiplot layout 1,3\nset logscale x 2\nset xlabel 'context depth (tokens)'\nset grid\nset key bottom left\n";
  panel("generation", "tokens/s", 2);
  panel("prompt processing", "tokens/s", 4);
  panel("peak RSS", "MiB", 3);
  gp << "unset multiplot\n";
  render_png_into(written, gp.str(), dir / "bench.png", 1500, 480);
  return written;
}

}  // namespace lococo
