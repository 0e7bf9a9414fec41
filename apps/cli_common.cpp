#include "cli_common.h"

#include "lococo/generate/saved_state.h"

#include <cstdlib>
#include <unistd.h>

#include <iostream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "lococo/kv/registry.h"
#include "lococo/core/cpu_features.h"
#include "lococo/core/io_util.h"

namespace lococo::cli {
namespace {

std::map<CLI::App*, Runner>& runners() {
  static std::map<CLI::App*, Runner> r;
  return r;
}

std::map<CLI::App*, std::function<void()>>& preparers() {
  static std::map<CLI::App*, std::function<void()>> p;
  return p;
}

}  // namespace

void register_command(CLI::App* sub, Runner run, std::function<void()> prepare) {
  runners()[sub] = std::move(run);
  if (prepare) preparers()[sub] = std::move(prepare);
}

int run_selected(CLI::App& root) {
  for (auto& [sub, run] : runners()) {
    if (!sub->parsed()) continue;
    if (auto p = preparers().find(sub); p != preparers().end()) p->second();
    restart_with_requested_env();
    return run();
  }
  std::cout << root.help();
  return 1;
}

void add_model_flags(CLI::App* app, ModelFlags& f) {
  app->add_option("--model,-m", f.dir, "Model directory (config.json, model.safetensors, tokenizer.model) or .gguf file; "
                                        "default: the bundled model or $LOCOCO_MODEL");
  app->add_option("--dtype", f.dtype, "Compute dtype of the weights")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
  app->add_option("--threads,-t", f.threads, "Intra-op threads (0 = one per core)")->check(CLI::NonNegativeNumber);
}

ModelOptions model_options(const ModelFlags& f) {
  ModelOptions o;
  o.dtype = parse_dtype(f.dtype, "--dtype");
  return o;
}

LoadedModel load_model(const ModelFlags& f) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(f.threads > 0 ? f.threads : static_cast<int>(cores));
  if (torch::get_num_threads() > 1 && blas_threading() == "pthreads")
    spdlog::warn("OpenBLAS is its pthreads build: its threads compete with libtorch's OpenMP threads and slow both "
                 "(scripts/setup.sh selects the OpenMP build: libopenblas0-openmp)");
  const std::filesystem::path dir = f.dir.empty() ? default_model_dir() : std::filesystem::path(f.dir);
  if (f.dir.empty() && !std::filesystem::exists(dir / "config.json"))
    throw std::runtime_error(fmt::format("no --model given and the bundled model is not at {} "
                                         "(make a test model with: lococo init-model --out DIR)", dir.string()));
  return load_model_dir(dir, model_options(f));
}

void add_cache_flags(CLI::App* app, CacheFlags& f, bool with_policy) {
  auto& o = f.options;
  if (with_policy)
    app->add_option("--cache", o.policy, "KV-cache policy")
        ->check(CLI::IsMember(cache_policy_names()))
        ->capture_default_str();
  app->add_option("--budget,-c,--ctx-size", o.budget, "M: cache slots kept after a compression (bounded policies)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--chunk", o.chunk, "B: tokens per forward pass")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--buffer", o.buffer, "b: compress only when slots exceed M + b")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--positions", f.positions, "RoPE positions: absolute (token index) or cache (slot index)")
      ->check(CLI::IsMember({"absolute", "cache"}))->capture_default_str();
  app->add_option("--sinks", o.streaming.sinks, "streaming: first tokens always kept")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--recent", o.h2o.recent, "h2o: most recent tokens kept (-1 = M/2)")->capture_default_str();
  app->add_option("--obs-window", o.snapkv.observation_window, "snapkv: observation window (last queries)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--pool-kernel", o.snapkv.pool_kernel, "snapkv: max-pool kernel over slot scores (odd)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  f.keep_rate = app->add_option("--keep-rate", o.lococo.keep_rate,
                                "lococo: share r of M kept verbatim (default with a trained compressor: its own)")
                    ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  f.local_window = app->add_option("--local-window", o.lococo.local_window,
                                   "lococo: last slots always kept (default with a trained compressor: its own)")
                       ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_flag("--window-last", o.lococo.window_last,
                "lococo: after a compression, the local window after the fused slots (nearest the new chunk)");
  app->add_option("--score-decay", o.lococo.score_decay,
                  "lococo: kept slots' scores x this before a chunk's attention is added (0 = overwrite, the "
                  "reference; 1 = accumulate, as H2O)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app->add_option("--retention-decay", o.lococo.retention_decay,
                  "lococo, learned retention: a slot ranks by its score less this per 1000 tokens of its age")
      ->check(CLI::Range(0.0, 1e6))->capture_default_str();
  app->add_option("--retention-protect", o.lococo.retention_protect,
                  "lococo, learned retention: a score that may hold a long-term slot (never aged)")
      ->capture_default_str();
  app->add_option("--retention-long-term", o.lococo.retention_long_term,
                  "lococo, learned retention: long-term slots per KV head, for the highest scores >= "
                  "--retention-protect (0 = none)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  if (!with_policy) return;  // training commands make their own compressor
  app->add_option("--compressor", o.lococo.compressor,
                  "lococo: trained compressor (.safetensors); default: the model's compressors/m<budget>.safetensors "
                  "(beside a GGUF file: FILE.compressors/m<budget>.safetensors)");
  app->add_flag("--allow-untrained", o.lococo.allow_untrained, "lococo: run with a freshly initialised compressor");
}

CacheOptions cache_options(const CacheFlags& f, const LoadedModel& m) {
  CacheOptions o = f.options;
  o.positions = parse_position_mode(f.positions);
  // A trained compressor knows the split it was trained for; flags override it.
  o.lococo.keep_rate_from_file = f.keep_rate && f.keep_rate->count() == 0;
  o.lococo.local_window_from_file = f.local_window && f.local_window->count() == 0;
  // Keys and values stay fp32 for bf16/f16 weights: decode_step's attention and
  // the compressors compute in fp32, and the budgeted caches are small.
  o.dtype = at::promote_types(m.model->weights().embed.scalar_type(), torch::kFloat32);
  o.device = m.model->weights().embed.device();
  return o;
}

CacheOptions inference_cache_options(const CacheFlags& f, const LoadedModel& m) {
  CacheOptions o = cache_options(f, m);
  return resolve_compressor(o, m.dir);
}

CacheOptions saved_state_cache_options(const CacheFlags& f, const LoadedModel& m, const nlohmann::json& state,
                                       const CLI::App& app) {
  const CacheOptions given = cache_options(f, m);  // the flags, defaults included
  const nlohmann::json mine = cache_options_json(given);
  // The flag of each field cache_options_json() names.
  static const std::vector<std::pair<std::string, std::string>> flag_of = {
      {"policy", "--cache"},         {"budget", "--budget"},           {"chunk", "--chunk"},
      {"buffer", "--buffer"},        {"positions", "--positions"},     {"sinks", "--sinks"},
      {"recent", "--recent"},        {"observation_window", "--obs-window"}, {"pool_kernel", "--pool-kernel"},
      {"keep_rate", "--keep-rate"},  {"local_window", "--local-window"}, {"score_decay", "--score-decay"},
      {"retention_decay", "--retention-decay"}, {"retention_protect", "--retention-protect"},
      {"retention_long_term", "--retention-long-term"}, {"window_last", "--window-last"}};
  for (const auto& [key, flag] : flag_of)
    if (app.count(flag) > 0 && state.contains(key) && (!mine.contains(key) || mine[key] != state[key]))
      throw std::invalid_argument(fmt::format("{} {}: the state was saved with {} {} (leave the flag out to use the "
                                              "state's)", flag, mine.contains(key) ? mine[key].dump() : "?", key,
                                              state[key].dump()));
  return resolve_compressor(options_from_state(state, given), m.dir);
}

int64_t parse_token_count(const std::string& text, const std::string& flag) {
  // "2048", "2k" (x 1024) or "1m" (x 1048576).
  size_t used = 0;
  int64_t n = -1;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = used ? text.substr(used) : "";
  const int64_t scale = unit.empty() ? 1 : (unit == "k" || unit == "K") ? 1024 : (unit == "m" || unit == "M") ? 1 << 20 : 0;
  if (!used || scale == 0 || n <= 0)
    throw std::invalid_argument(fmt::format("{}: '{}' is not a positive token count (e.g. 2048 or 2k)", flag, text));
  return n * scale;
}

std::vector<int64_t> parse_token_counts(const std::vector<std::string>& texts, const std::string& flag) {
  std::vector<int64_t> out;
  for (const auto& t : texts) out.push_back(parse_token_count(t, flag));
  return out;
}

void add_sampling_flags(CLI::App* app, SamplingOptions& s) {
  app->add_option("--temperature,--temp", s.temperature, "Sampling temperature (0 = greedy)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--top-k", s.top_k, "Keep the k most likely tokens (0 = all)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app->add_option("--top-p", s.top_p, "Nucleus sampling mass in (0, 1]")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app->add_option("--seed", s.seed, "Random seed of the sampler")->capture_default_str();
}

std::string read_input_text(const std::string& path) {
  if (path == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  return read_text_file(path);
}

namespace {
char** g_argv = nullptr;
}  // namespace

void set_process_args(char** argv) { g_argv = argv; }

namespace {
std::map<std::string, std::string>& requested_env() {
  static std::map<std::string, std::string> env;
  return env;
}
}  // namespace

void request_env(const char* name, const std::string& value) {
  if (std::getenv(name) == nullptr) requested_env()[name] = value;
}

void restart_with_requested_env() {
  if (requested_env().empty() || g_argv == nullptr || std::getenv("LOCOCO_RESTARTED") != nullptr) return;
  for (const auto& [name, value] : requested_env()) ::setenv(name.c_str(), value.c_str(), 1);
  ::setenv("LOCOCO_RESTARTED", "1", 1);
  ::execv("/proc/self/exe", g_argv);  // returns only on failure: then go on as we are
}

}  // namespace lococo::cli
