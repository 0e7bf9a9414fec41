// The cache policies, one row each: what the rest of the engine may know about
// a policy without naming it. Adding a policy: one file in src/kv/ with its
// factory, one row in src/kv/registry.cpp.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lococo/kv/cache.h"

namespace lococo {

struct CachePolicyTraits {
  std::string name;                 // as --cache and "cache.policy" spell it
  std::string summary;              // one line for --help and reports
  bool bounded = true;              // memory fixed by --budget (false: grows with the input)
  bool needs_compressor = false;    // runs a trained compressor (options.lococo.compressor)
  bool compared_by_default = true;  // in the default --policies of eval and bench
  std::unique_ptr<KvCache> (*make)(const ModelConfig&, const CacheOptions&) = nullptr;
  std::vector<std::string> knobs;   // the policy's own options it reads (cache_options_json's names)
};

// Every policy, in the order the CLI lists them.
const std::vector<CachePolicyTraits>& cache_policies();
// The row of `name`; std::invalid_argument listing the choices for an unknown one.
const CachePolicyTraits& cache_policy(const std::string& name);
bool is_bounded(const std::string& policy);
// The bytes of K/V storage (KvCache::bytes()) that make_cache(config, options)
// will hold after reading `tokens` tokens, found without allocating anything;
// the same std::invalid_argument as make_cache for an unknown policy or a
// budget, buffer or chunk out of range. A bounded policy's is fixed; the full
// cache's grows by doubling, so this is at most twice the tokens' bytes.
int64_t planned_cache_bytes(const ModelConfig& config, const CacheOptions& options, int64_t tokens);
// The default --policies of comparisons (eval, bench).
std::vector<std::string> default_compared_policies();
// The policy that keeps every token: the quality ceiling of comparisons.
const std::string& reference_policy();
// The policy whose compressor train-compressor and tune train.
const std::string& trained_policy();
// The heuristic a trained compressor's validation is reported beside.
const std::string& baseline_policy();

// Cache options as JSON, named as the CLI's flags with '_' for '-': the common
// fields (policy, budget, chunk, buffer, positions, dtype) and the knobs of
// options.policy only: what shapes a cache's state (saved states record it).
nlohmann::json cache_options_json(const CacheOptions& options);
// `options` with the fields `json` names set: the common ones, any policy's
// knobs, and compressor / allow_untrained / seed. std::invalid_argument naming
// an unknown key or a value of the wrong type.
CacheOptions apply_cache_options_json(CacheOptions options, const nlohmann::json& json);

// Where a model keeps its trained compressor for budget M: a model directory
// DIR keeps it at DIR/compressors/m<M>.safetensors; a model file (GGUF)
// FILE.gguf beside itself, at FILE.compressors/m<M>.safetensors.
std::filesystem::path model_compressor_path(const std::filesystem::path& model, int64_t budget);

// Fills options.lococo.compressor for a policy that needs one when it is empty
// and untrained compressors are not allowed: the model's own
// (model_compressor_path). std::invalid_argument naming where it looked when
// there is none. keep_rate and local_window become the file's where
// options.lococo asks for that (*_from_file). Other policies' options come back unchanged.
CacheOptions resolve_compressor(CacheOptions options, const std::filesystem::path& model);

}  // namespace lococo
