// Shared pieces of the `lococo` subcommands: option groups (model, cache,
// sampling), and loading what they name.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "lococo/generate/generate.h"
#include "lococo/kv/cache.h"
#include "lococo/model/model_dir.h"

namespace lococo::cli {

// A subcommand registers itself and the function that runs it.
using Runner = std::function<int()>;
// `prepare` (optional) runs after parsing, before the process restarts with
// the environment requested (request_env); `run` after that.
void register_command(CLI::App* sub, Runner run, std::function<void()> prepare = nullptr);
int run_selected(CLI::App& root);

struct ModelFlags {
  std::string dir;             // --model; empty = the bundled default
  std::string dtype = "f32";   // --dtype f32|bf16|f16
  int threads = 0;             // --threads; 0 = one per core
};
void add_model_flags(CLI::App* app, ModelFlags& flags);
LoadedModel load_model(const ModelFlags& flags);
ModelOptions model_options(const ModelFlags& flags);

struct CacheFlags {
  CacheOptions options;
  // Slot positions keep RoPE inside the trained range for any input length;
  // for the full cache both schemes are the same.
  std::string positions = "cache";
  const CLI::Option* keep_rate = nullptr;     // set by add_cache_flags: was the flag given?
  const CLI::Option* local_window = nullptr;
};
// with_policy = false (training): no --cache, --compressor or --allow-untrained.
void add_cache_flags(CLI::App* app, CacheFlags& flags, bool with_policy = true);
// Fills dtype/device from the model and checks the values.
CacheOptions cache_options(const CacheFlags& flags, const LoadedModel& model);
// The same, and for lococo without --compressor the model directory's own
// compressors/m<budget>.safetensors when it has one (generate, perplexity).
CacheOptions inference_cache_options(const CacheFlags& flags, const LoadedModel& model);

// The cache options of a saved state (lococo/generate/saved_state.h): the
// state's own, with the model's compressor for lococo; a cache flag given on
// the command line (`app`) that differs from the state is refused, naming it.
CacheOptions saved_state_cache_options(const CacheFlags& flags, const LoadedModel& model,
                                       const nlohmann::json& state_options, const CLI::App& app);

// "2048", "2k" or "1m" as tokens; throws std::invalid_argument naming `flag`.
int64_t parse_token_count(const std::string& text, const std::string& flag);
std::vector<int64_t> parse_token_counts(const std::vector<std::string>& texts, const std::string& flag);

void add_sampling_flags(CLI::App* app, SamplingOptions& s);

// main() records argv so a command can restart the process with a changed
// environment (thread pools read theirs only when the libraries load).
void set_process_args(char** argv);
// Environment the process must start with (libgomp and OpenBLAS read theirs
// when they are loaded, before main): a value for `name` unless the
// environment already has one. restart_with_requested_env() then re-executes
// the process once with every request applied; a process started that way
// (LOCOCO_RESTARTED set) never restarts again.
void request_env(const char* name, const std::string& value);
void restart_with_requested_env();

// Reads --file (or "-" for stdin); throws naming the file.
std::string read_input_text(const std::string& path);

}  // namespace lococo::cli
