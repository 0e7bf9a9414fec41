#include "lococo/kv/registry.h"

#include <algorithm>
#include <functional>
#include <stdexcept>

#include <fmt/format.h>

#include "kv/policies.h"
#include "kv/slot_cache.h"
#include "lococo/kv/compressor.h"

namespace lococo {

const std::vector<CachePolicyTraits>& cache_policies() {
  static const std::vector<CachePolicyTraits> table = {
      {"full", "every token kept (the quality ceiling; memory grows)", false, false, true, make_full_cache, {}},
      {"streaming", "attention sinks + the most recent tokens (StreamingLLM)", true, false, true, make_streaming_cache,
       {"sinks"}},
      {"h2o", "heavy hitters by accumulated attention + recent tokens (H2O)", true, false, true, make_h2o_cache,
       {"recent"}},
      {"tova", "evicts the slots the last query attends to least (TOVA)", true, false, false, make_tova_cache, {}},
      {"snapkv", "slots voted for by the last queries' window, pooled (SnapKV)", true, false, false, make_snapkv_cache,
       {"observation_window", "pool_kernel"}},
      {"lococo-hh", "LoCoCo's heavy-hitter selection without fusion", true, false, true, make_lococo_hh_cache,
       {"keep_rate", "local_window", "score_decay", "window_last"}},
      {"lococo", "heavy hitters + slots fused by a learned convolution (LoCoCo)", true, true, true, make_lococo_cache,
       {"keep_rate", "local_window", "score_decay", "retention_decay", "retention_protect", "retention_long_term",
        "window_last"}},
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

int64_t planned_cache_bytes(const ModelConfig& config, const CacheOptions& o, int64_t tokens) {
  if (o.chunk <= 0) throw std::invalid_argument(fmt::format("--chunk must be positive (got {})", o.chunk));
  const int64_t slots = cache_policy(o.policy).bounded ? bounded_capacity(o) : 2 * std::max(tokens, o.chunk);
  return slots * config.kv_bytes_per_token(c10::elementSize(o.dtype));
}

namespace {

// One option by name: read from and written into CacheOptions.
struct OptionField {
  std::string name;
  std::function<nlohmann::json(const CacheOptions&)> get;
  std::function<void(CacheOptions&, const nlohmann::json&)> set;
};

template <typename T>
OptionField field(std::string name, T CacheOptions::*f) {
  return {std::move(name), [f](const CacheOptions& o) { return nlohmann::json(o.*f); },
          [f](CacheOptions& o, const nlohmann::json& j) { o.*f = j.get<T>(); }};
}

template <typename G, typename T>
OptionField field(std::string name, G CacheOptions::*g, T G::*f) {
  return {std::move(name), [g, f](const CacheOptions& o) { return nlohmann::json((o.*g).*f); },
          [g, f](CacheOptions& o, const nlohmann::json& j) { (o.*g).*f = j.get<T>(); }};
}

// The common fields first, then every policy's knobs, then the lococo
// inference settings that no state records (compressor files are fingerprinted).
const std::vector<OptionField>& option_fields() {
  static const std::vector<OptionField> fields = {
      field("policy", &CacheOptions::policy),
      field("budget", &CacheOptions::budget),
      field("chunk", &CacheOptions::chunk),
      field("buffer", &CacheOptions::buffer),
      {"positions", [](const CacheOptions& o) { return nlohmann::json(to_string(o.positions)); },
       [](CacheOptions& o, const nlohmann::json& j) { o.positions = parse_position_mode(j.get<std::string>()); }},
      {"dtype", [](const CacheOptions& o) { return nlohmann::json(dtype_name(o.dtype)); },
       [](CacheOptions& o, const nlohmann::json& j) { o.dtype = parse_dtype(j.get<std::string>(), "dtype"); }},
      field("sinks", &CacheOptions::streaming, &StreamingOptions::sinks),
      field("recent", &CacheOptions::h2o, &H2oOptions::recent),
      field("observation_window", &CacheOptions::snapkv, &SnapKvOptions::observation_window),
      field("pool_kernel", &CacheOptions::snapkv, &SnapKvOptions::pool_kernel),
      field("keep_rate", &CacheOptions::lococo, &LococoOptions::keep_rate),
      field("local_window", &CacheOptions::lococo, &LococoOptions::local_window),
      field("score_decay", &CacheOptions::lococo, &LococoOptions::score_decay),
      field("retention_decay", &CacheOptions::lococo, &LococoOptions::retention_decay),
      field("retention_protect", &CacheOptions::lococo, &LococoOptions::retention_protect),
      field("retention_long_term", &CacheOptions::lococo, &LococoOptions::retention_long_term),
      field("window_last", &CacheOptions::lococo, &LococoOptions::window_last),
      field("compressor", &CacheOptions::lococo, &LococoOptions::compressor),
      field("allow_untrained", &CacheOptions::lococo, &LococoOptions::allow_untrained),
      field("seed", &CacheOptions::lococo, &LococoOptions::seed),
  };
  return fields;
}

const size_t kCommonFields = 6;  // policy .. dtype

const OptionField* find_field(const std::string& name) {
  for (const auto& f : option_fields())
    if (f.name == name) return &f;
  return nullptr;
}

}  // namespace

nlohmann::json cache_options_json(const CacheOptions& o) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < kCommonFields; ++i) j[option_fields()[i].name] = option_fields()[i].get(o);
  for (const auto& knob : cache_policy(o.policy).knobs) j[knob] = find_field(knob)->get(o);
  return j;
}

CacheOptions apply_cache_options_json(CacheOptions o, const nlohmann::json& j) {
  if (!j.is_object()) throw std::invalid_argument("cache options: a JSON object expected");
  for (const auto& [key, value] : j.items()) {
    const OptionField* f = find_field(key);
    if (!f) {
      std::vector<std::string> known;
      for (const auto& k : option_fields()) known.push_back(k.name);
      throw std::invalid_argument(fmt::format("unknown cache option '{}' (known: {})", key, fmt::join(known, ", ")));
    }
    try {
      f->set(o, value);
      if (key == "keep_rate") o.lococo.keep_rate_from_file = false;  // given
      if (key == "local_window") o.lococo.local_window_from_file = false;
    } catch (const nlohmann::json::exception&) {
      throw std::invalid_argument(fmt::format("cache option '{}': {} is not of the right type", key, value.dump()));
    }
  }
  return o;
}

std::filesystem::path model_compressor_path(const std::filesystem::path& model, int64_t budget) {
  const std::string file = fmt::format("m{}.safetensors", budget);
  if (std::filesystem::is_directory(model)) return model / "compressors" / file;
  auto beside = model;
  beside.replace_extension(".compressors");
  return beside / file;
}

CacheOptions resolve_compressor(CacheOptions o, const std::filesystem::path& model) {
  if (!cache_policy(o.policy).needs_compressor) return o;
  if (o.lococo.compressor.empty() && !o.lococo.allow_untrained) {
    const auto file = model_compressor_path(model, o.budget);
    if (!std::filesystem::exists(file))
      throw std::invalid_argument(fmt::format(
          "--cache {} needs a trained compressor for --budget {}: none at {} (pass --compressor FILE, or "
          "--allow-untrained to run with a freshly initialised one)",
          o.policy, o.budget, file.string()));
    o.lococo.compressor = file.string();
  }
  auto& l = o.lococo;
  if ((l.keep_rate_from_file || l.local_window_from_file) && !l.compressor.empty()) {
    const CompressorOptions file = LococoCompressor::read_options(l.compressor);
    if (l.keep_rate_from_file) l.keep_rate = file.keep_rate;
    if (l.local_window_from_file) l.local_window = file.local_window;
  }
  return o;
}

}  // namespace lococo
