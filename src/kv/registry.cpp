#include "lococo/kv/registry.h"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

#include "kv/policies.h"

namespace lococo {

const std::vector<CachePolicyTraits>& cache_policies() {
  static const std::vector<CachePolicyTraits> table = {
      {"full", "every token kept (the quality ceiling; memory grows)", false, false, true, make_full_cache},
      {"streaming", "attention sinks + the most recent tokens (StreamingLLM)", true, false, true, make_streaming_cache},
      {"h2o", "heavy hitters by accumulated attention + recent tokens (H2O)", true, false, true, make_h2o_cache},
      {"tova", "evicts the slots the last query attends to least (TOVA)", true, false, false, make_tova_cache},
      {"snapkv", "slots voted for by the last queries' window, pooled (SnapKV)", true, false, false, make_snapkv_cache},
      {"lococo-hh", "LoCoCo's heavy-hitter selection without fusion", true, false, true, make_lococo_hh_cache},
      {"lococo", "heavy hitters + slots fused by a learned convolution (LoCoCo)", true, true, true, make_lococo_cache},
  };
  return table;
}

const std::vector<std::string>& cache_policy_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& p : cache_policies()) out.push_back(p.name);
    return out;
  }();
  return names;
}

const CachePolicyTraits& cache_policy(const std::string& name) {
  for (const auto& p : cache_policies())
    if (p.name == name) return p;
  throw std::invalid_argument(
      fmt::format("unknown cache policy '{}' (choose from: {})", name, fmt::join(cache_policy_names(), ", ")));
}

bool is_bounded(const std::string& policy) { return cache_policy(policy).bounded; }

std::vector<std::string> default_compared_policies() {
  std::vector<std::string> out;
  for (const auto& p : cache_policies())
    if (p.compared_by_default) out.push_back(p.name);
  return out;
}

const std::string& trained_policy() {
  static const std::string name = [] {
    for (const auto& p : cache_policies())
      if (p.needs_compressor) return p.name;
    return std::string();
  }();
  return name;
}

const std::string& reference_policy() {
  static const std::string name = [] {
    for (const auto& p : cache_policies())
      if (!p.bounded) return p.name;
    return std::string();
  }();
  return name;
}

const std::string& baseline_policy() {
  static const std::string name = "streaming";
  return name;
}

std::unique_ptr<KvCache> make_cache(const ModelConfig& config, const CacheOptions& o) {
  if (o.chunk <= 0) throw std::invalid_argument(fmt::format("--chunk must be positive (got {})", o.chunk));
  return cache_policy(o.policy).make(config, o);
}

std::filesystem::path model_compressor_path(const std::filesystem::path& model, int64_t budget) {
  const std::string file = fmt::format("m{}.safetensors", budget);
  if (std::filesystem::is_directory(model)) return model / "compressors" / file;
  auto beside = model;
  beside.replace_extension(".compressors");
  return beside / file;
}

CacheOptions resolve_compressor(CacheOptions o, const std::filesystem::path& model) {
  if (!cache_policy(o.policy).needs_compressor || !o.lococo.compressor.empty() || o.lococo.allow_untrained) return o;
  const auto file = model_compressor_path(model, o.budget);
  if (!std::filesystem::exists(file))
    throw std::invalid_argument(fmt::format(
        "--cache {} needs a trained compressor for --budget {}: none at {} (pass --compressor FILE, or "
        "--allow-untrained to run with a freshly initialised one)",
        o.policy, o.budget, file.string()));
  o.lococo.compressor = file.string();
  return o;
}

}  // namespace lococo
