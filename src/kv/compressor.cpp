#include "lococo/kv/compressor.h"

#include <cmath>
#include <map>
#include <stdexcept>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "kv/policies.h"
#include "lococo/io/safetensors.h"

namespace lococo {

int64_t fused_slot_count(int64_t budget, double keep_rate) {
  return static_cast<int64_t>(static_cast<double>(budget) * (1.0 - keep_rate));
}

// ---------------------------------------------------------------------------
// Options

void CompressorOptions::validate() const {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  if (num_layers <= 0 || num_kv_heads <= 0 || head_dim <= 0)
    fail(fmt::format("compressor: model shape must be positive (layers {}, KV heads {}, head_dim {})", num_layers,
                     num_kv_heads, head_dim));
  if (budget <= 0) fail(fmt::format("--budget must be positive (got {})", budget));
  if (!(keep_rate >= 0.0 && keep_rate <= 1.0)) fail(fmt::format("--keep-rate must be in [0, 1] (got {})", keep_rate));
  if (local_window < 0 || local_window > kept())
    fail(fmt::format("--local-window must be in [0, M - floor(M (1 - r))] = [0, {}] (got {})", kept(), local_window));
  if (buffer < 0) fail(fmt::format("--buffer must not be negative (got {})", buffer));
  if (kernel < 1 || kernel % 2 == 0) fail(fmt::format("--kernel must be a positive odd number (got {})", kernel));
  if (conv_layers < 1) fail(fmt::format("--conv-layers must be at least 1 (got {})", conv_layers));
  if (expand < 1) fail(fmt::format("--expand must be at least 1 (got {})", expand));
  if (activation != "relu" && activation != "gelu" && activation != "silu" && activation != "none")
    fail(fmt::format("--activation must be relu, gelu, silu or none (got '{}')", activation));
  if (!std::isfinite(lambda_init)) fail("--lambda-init must be finite");
  if (!(init_std > 0 && std::isfinite(init_std))) fail(fmt::format("--init-std must be positive (got {})", init_std));
  if (retention_hidden < 0) fail(fmt::format("--retention-hidden must not be negative (got {})", retention_hidden));
  if (retention_sinks < 0 || (learned_retention() && retention_sinks > kept() - local_window))
    fail(fmt::format("--retention-sinks must be in [0, M - m - w] = [0, {}] (got {})", kept() - local_window,
                     retention_sinks));
  if (retention_copy && !learned_retention()) fail("--copy-head needs learned retention (--retention-hidden > 0)");
  if (lambda_sigmoid && !(lambda_init > 0 && lambda_init < 1))
    fail(fmt::format("--lambda-init must be in (0, 1) with --lambda-sigmoid (got {})", lambda_init));
}

CompressorOptions CompressorOptions::with_shape_of(const ModelConfig& config, const CacheOptions& cache) const {
  const CompressorOptions shape = from(config, cache);
  CompressorOptions c = *this;
  c.num_layers = shape.num_layers, c.num_kv_heads = shape.num_kv_heads, c.head_dim = shape.head_dim;
  c.budget = shape.budget, c.keep_rate = shape.keep_rate, c.local_window = shape.local_window;
  c.buffer = shape.buffer;
  return c;
}

CompressorOptions CompressorOptions::from(const ModelConfig& config, const CacheOptions& cache) {
  CompressorOptions o;
  o.num_layers = config.num_layers;
  o.num_kv_heads = config.num_kv_heads;
  o.head_dim = config.head_dim;
  o.budget = cache.budget;
  o.keep_rate = cache.lococo.keep_rate;
  o.local_window = cache.lococo.local_window;
  o.buffer = cache.buffer;
  return o;
}

std::string CompressorOptions::mismatch(const ModelConfig& config, const CacheOptions& cache) const {
  auto differ = [](const char* field, auto mine, const char* source, auto theirs) {
    return fmt::format("{}: compressor {}, {} {}", field, mine, source, theirs);
  };
  if (num_layers != config.num_layers) return differ("num_layers", num_layers, "model", config.num_layers);
  if (num_kv_heads != config.num_kv_heads) return differ("num_kv_heads", num_kv_heads, "model", config.num_kv_heads);
  if (head_dim != config.head_dim) return differ("head_dim", head_dim, "model", config.head_dim);
  if (keep_rate != cache.lococo.keep_rate) return differ("keep_rate", keep_rate, "--keep-rate", cache.lococo.keep_rate);
  // Keeping every slot verbatim, the file is only its retention MLPs, which
  // score one token at a time: any budget and window can use them.
  if (keep_rate == 1.0 && learned_retention()) return "";
  if (budget != cache.budget) return differ("budget", budget, "--budget", cache.budget);
  if (local_window != cache.lococo.local_window)
    return differ("local_window", local_window, "--local-window", cache.lococo.local_window);
  return "";
}

// ---------------------------------------------------------------------------
// Partition

SlotPartition partition_slots(const torch::Tensor& scores, int64_t keep, int64_t w, int64_t m) {
  torch::NoGradGuard no_grad;
  const int64_t H = scores.size(0), L = scores.size(1);
  TORCH_CHECK(keep >= w && keep <= L && m <= L - keep, "partition_slots: need w <= keep and keep + m <= L");
  SlotPartition p;
  p.heavy = top_k_then_recent(scores.narrow(1, 0, L - w), keep - w, w);                    // [H, keep]
  // Sort key: heavy hitters first, then the rest, each in cache order.
  auto is_rest = torch::ones({H, L}, p.heavy.options()).scatter_(1, p.heavy, 0);           // [H, L]
  auto order = (is_rest * L + torch::arange(L, p.heavy.options())).argsort(/*dim=*/1, /*descending=*/false);             // [H, L]
  p.rest = order.narrow(1, keep, L - keep);                                                // [H, S]
  p.chosen = top_k_then_recent(scores.gather(1, p.rest), m, 0);                            // [H, m]
  return p;
}

// ---------------------------------------------------------------------------
// One layer

CompressorLayerImpl::CompressorLayerImpl(const CompressorOptions& o)
    : activation_(o.activation), sigmoid_(o.lambda_sigmoid) {
  const int64_t m = o.fused();
  auto list = register_module("convs", torch::nn::ModuleList());
  // m = 0 (keep rate 1) fuses nothing: no convs at all.
  for (int64_t j = 0; m > 0 && j < o.conv_layers; ++j) {
    const int64_t in = j == 0 ? o.input_channels() : m * o.expand;
    const int64_t out = j + 1 == o.conv_layers ? m : m * o.expand;
    auto conv = torch::nn::Conv1d(torch::nn::Conv1dOptions(in, out, o.kernel).padding((o.kernel - 1) / 2));
    list->push_back(conv);
    convs.push_back(conv);
  }
  const double init = o.lambda_sigmoid ? std::log(o.lambda_init / (1 - o.lambda_init)) : o.lambda_init;
  lambda = register_parameter("lambda", torch::full({1}, init));
  if (o.learned_retention()) {
    namespace nn = torch::nn;
    retention = register_module("retention", nn::Sequential(nn::Linear(o.retention_inputs(), o.retention_hidden),
                                                             nn::GELU(), nn::Linear(o.retention_hidden, o.retention_outputs())));
  }
}

CompressorLayerImpl::RetentionOutputs CompressorLayerImpl::retention_outputs(const torch::Tensor& keys,
                                                                             const torch::Tensor& values) const {
  TORCH_CHECK(!retention.is_empty(), "retention_scores: this compressor has no learned retention");
  const int64_t H = keys.size(0), T = keys.size(1);
  const auto dtype = at::promote_types(keys.scalar_type(), torch::kFloat32);
  auto x = torch::cat({keys, values}, -1).to(dtype).transpose(0, 1).reshape({T, -1});  // [T, Hkv 2d]
  auto mlp = retention;  // a holder copy: forward() is not const
  auto y = mlp->forward(x).transpose(0, 1);                                             // [Hkv or 2 Hkv, T]
  if (y.size(0) == H) return {y.reshape({H, T}), {}};
  return {y.narrow(0, 0, H), y.narrow(0, H, H)};
}

torch::Tensor copy_aware_scores(const torch::Tensor& scores, const torch::Tensor& copy, double protect) {
  return torch::where(copy > 0, protect + copy, scores.clamp_max(protect - kBelowProtect));
}

torch::Tensor CompressorLayerImpl::retention_scores(const torch::Tensor& keys, const torch::Tensor& values) const {
  return retention_outputs(keys, values).scores;
}

torch::Tensor CompressorLayerImpl::mix() const { return sigmoid_ ? torch::sigmoid(lambda) : lambda; }

torch::Tensor CompressorLayerImpl::fusion_weights(const torch::Tensor& x) const {
  auto z = x;  // [Hkv, C, S]
  for (auto conv : convs) {  // a holder copy: forward() is not const
    z = conv->forward(z);
    if (activation_ == "relu") z = torch::relu(z);
    else if (activation_ == "gelu") z = torch::gelu(z);
    else if (activation_ == "silu") z = torch::silu(z);
  }
  // Softmax in fp32 at least (double stays double: gradient checks).
  return torch::softmax(z.to(at::promote_types(z.scalar_type(), torch::kFloat32)), /*dim=*/-1);  // [Hkv, m, S]
}

// ---------------------------------------------------------------------------
// The compressor

namespace {

// The two feature channels of the slots N: centred log score and the fused
// marker. s_rest [H, S]; fused [H, L] bool or undefined; rest [H, S]. -> [H, 2, S]
torch::Tensor slot_features(const torch::Tensor& s_rest, const torch::Tensor& fused, const torch::Tensor& rest) {
  auto log_s = (s_rest.clamp_min(0) + 1e-6).log();
  log_s = log_s - log_s.mean(1, /*keepdim=*/true);                                     // [H, S]
  auto marker = fused.defined() ? fused.gather(1, rest).to(s_rest.scalar_type()) : torch::zeros_like(s_rest);
  return torch::stack({log_s, marker}, 1);                                             // [H, 2, S]
}

}  // namespace

LococoCompressor::LococoCompressor(CompressorOptions options, uint64_t seed) : options_(std::move(options)) {
  options_.validate();
  auto list = register_module("layers", torch::nn::ModuleList());
  auto gen = at::detail::createCPUGenerator(seed);
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < options_.num_layers; ++i) {
    CompressorLayer layer(options_);
    for (auto& conv : layer->convs) {
      // Weights N(0, init_std): 1 is the reference (a nearly one-hot softmax at first); bias as torch's default.
      const auto& w = conv->weight;
      const double bound = 1.0 / std::sqrt(static_cast<double>(w.size(1) * w.size(2)));
      w.copy_(at::normal(0.0, options_.init_std, w.sizes(), gen));
      conv->bias.uniform_(-bound, bound, gen);
    }
    if (!layer->retention.is_empty())
      for (auto& p : layer->retention->named_parameters()) {
        // N(0, 1 / fan_in) weights, zero biases: deterministic in the seed like the convs.
        const bool weight = p.key().find("weight") != std::string::npos;
        if (weight) p.value().copy_(at::normal(0.0, 1.0 / std::sqrt(static_cast<double>(p.value().size(1))),
                                               p.value().sizes(), gen));
        else p.value().zero_();
      }
    if (options_.retention_copy) {
      // A fresh copy head flags nothing (logit kCopyInitLogit for every token)
      // until trained: a layer never trained must not claim long-term slots.
      const int64_t H = options_.num_kv_heads;
      auto last = layer->retention->named_parameters();
      last["2.weight"].narrow(0, H, H).zero_();
      last["2.bias"].narrow(0, H, H).fill_(kCopyInitLogit);
    }
    list->push_back(layer);
    layers_.push_back(layer);
  }
}

std::vector<std::pair<std::string, torch::Tensor>> LococoCompressor::retention_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : named_parameters())
    if (p.key().find(".retention.") != std::string::npos) out.emplace_back(p.key(), p.value());
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> LococoCompressor::fusion_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : named_parameters())
    if (p.key().find(".retention.") == std::string::npos) out.emplace_back(p.key(), p.value());
  return out;
}

torch::Tensor LococoCompressor::mixing_weights(int i, const torch::Tensor& x, const torch::Tensor& chosen) const {
  const auto& l = layer(i);
  auto P = l.fusion_weights(x);                                                       // [Hkv, m, S]
  auto R = torch::zeros_like(P).scatter_(2, chosen.unsqueeze(-1), 1.0);               // [Hkv, m, S]
  const auto mix = l.mix();
  return (1 - mix) * R + mix * P;                                                     // [Hkv, m, S]
}

CompressedSlots LococoCompressor::compress(int i, const torch::Tensor& keys, const torch::Tensor& values,
                                           const torch::Tensor& scores, const torch::Tensor& fused) const {
  const int64_t H = keys.size(0), L = keys.size(1), d = keys.size(2);
  const int64_t keep = options_.kept(), m = options_.fused();
  TORCH_CHECK(H == options_.num_kv_heads && d == options_.head_dim, "compress: keys must be [Hkv, L, d] = [",
              options_.num_kv_heads, ", L, ", options_.head_dim, "]");
  TORCH_CHECK(L >= options_.budget, "compress: ", L, " slots cannot be compressed to ", options_.budget);
  const auto dtype = at::promote_types(keys.scalar_type(), torch::kFloat32);  // fp32, or double in gradient checks
  // Keys and values keep whatever autograd history they bring (BPTT through
  // earlier compressions, SlotCache::compression_input); stored slots bring none.
  auto rows = [&](const torch::Tensor& t, const torch::Tensor& index) {  // [H, n] -> [H, n, d]
    return t.gather(1, index.unsqueeze(-1).expand({H, index.size(1), d})).to(dtype);
  };
  CompressedSlots c;
  c.parts = partition_slots(scores, keep, options_.local_window, m);
  auto s = scores.detach().to(dtype);                                                 // [H, L]
  auto k_heavy = rows(keys, c.parts.heavy), v_heavy = rows(values, c.parts.heavy);    // [H, keep, d]
  auto s_heavy = s.gather(1, c.parts.heavy);                                          // [H, keep]
  if (m == 0) {
    c.keys = k_heavy;
    c.values = v_heavy;
    c.scores = s_heavy;
    return c;
  }
  auto k_rest = rows(keys, c.parts.rest), v_rest = rows(values, c.parts.rest);        // [H, S, d]
  auto x = torch::cat({k_rest, v_rest}, -1).transpose(1, 2);                          // [H, 2d, S]
  if (options_.slot_features) x = torch::cat({x, slot_features(s.gather(1, c.parts.rest), fused, c.parts.rest)}, 1);
  c.mixing = mixing_weights(i, x, c.parts.chosen);                                    // [H, m, S]
  c.keys = torch::cat({k_heavy, c.mixing.matmul(k_rest)}, 1);                         // [H, M, d]
  c.values = torch::cat({v_heavy, c.mixing.matmul(v_rest)}, 1);                       // [H, M, d]
  auto s_fused = c.mixing.detach().matmul(s.gather(1, c.parts.rest).unsqueeze(-1)).squeeze(-1);  // [H, m]
  c.scores = torch::cat({s_heavy, s_fused}, 1);                                       // [H, M]
  return c;
}

// ---------------------------------------------------------------------------
// Files

namespace {

const char* kFormat = "lococo-compressor";

std::map<std::string, std::string> to_metadata(const CompressorOptions& o) {
  return {
      {"format", kFormat},
      {"version", "1"},
      {"num_layers", std::to_string(o.num_layers)},
      {"num_kv_heads", std::to_string(o.num_kv_heads)},
      {"head_dim", std::to_string(o.head_dim)},
      {"budget", std::to_string(o.budget)},
      {"keep_rate", fmt::format("{:.17g}", o.keep_rate)},
      {"local_window", std::to_string(o.local_window)},
      {"buffer", std::to_string(o.buffer)},
      {"kernel", std::to_string(o.kernel)},
      {"conv_layers", std::to_string(o.conv_layers)},
      {"expand", std::to_string(o.expand)},
      {"activation", o.activation},
      {"lambda_init", fmt::format("{:.17g}", o.lambda_init)},
      {"lambda_sigmoid", o.lambda_sigmoid ? "1" : "0"},
      {"slot_features", o.slot_features ? "1" : "0"},
      {"retention_hidden", std::to_string(o.retention_hidden)},
      {"retention_sinks", std::to_string(o.retention_sinks)},
      {"retention_copy", o.retention_copy ? "1" : "0"},
      {"fused_slots", std::to_string(o.fused())},
  };
}

// Reads the metadata of `file` back into options; every field must be present.
CompressorOptions from_metadata(const SafetensorsFile& f) {
  const auto& meta = f.metadata();
  const std::string file = f.path().string();
  auto field = [&](const std::string& key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end())
      throw std::runtime_error(fmt::format("{}: compressor metadata lacks '{}'", file, key));
    return it->second;
  };
  auto integer = [&](const std::string& key) {
    const std::string& s = field(key);
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != s.size())
      throw std::runtime_error(fmt::format("{}: compressor metadata '{}' is not an integer ('{}')", file, key, s));
    return v;
  };
  auto real = [&](const std::string& key) {
    const std::string& s = field(key);
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != s.size())
      throw std::runtime_error(fmt::format("{}: compressor metadata '{}' is not a number ('{}')", file, key, s));
    return v;
  };
  if (meta.find("format") == meta.end() || meta.at("format") != kFormat)
    throw std::runtime_error(fmt::format("{}: not a LoCoCo compressor (metadata 'format' must be '{}')", file, kFormat));
  CompressorOptions o;
  o.num_layers = integer("num_layers");
  o.num_kv_heads = integer("num_kv_heads");
  o.head_dim = integer("head_dim");
  o.budget = integer("budget");
  o.keep_rate = real("keep_rate");
  o.local_window = integer("local_window");
  o.buffer = integer("buffer");
  o.kernel = integer("kernel");
  o.conv_layers = integer("conv_layers");
  o.expand = integer("expand");
  o.activation = field("activation");
  o.lambda_init = real("lambda_init");
  // Flags added after the first files: absent means off.
  auto flag = [&](const std::string& key) {
    if (meta.find(key) == meta.end()) return false;
    const auto v = integer(key);
    if (v != 0 && v != 1)
      throw std::runtime_error(fmt::format("{}: compressor metadata '{}' must be 0 or 1 (got {})", file, key, v));
    return v == 1;
  };
  o.lambda_sigmoid = flag("lambda_sigmoid");
  o.slot_features = flag("slot_features");
  o.retention_hidden = meta.count("retention_hidden") ? integer("retention_hidden") : 0;
  o.retention_sinks = meta.count("retention_sinks") ? integer("retention_sinks") : 4;
  o.retention_copy = flag("retention_copy");
  try {
    o.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(fmt::format("{}: bad compressor metadata: {}", file, e.what()));
  }
  return o;
}

std::string shape_string(torch::IntArrayRef s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

}  // namespace

void LococoCompressor::save(const std::filesystem::path& file) const {
  NamedTensors tensors;
  for (const auto& p : named_parameters())
    tensors.emplace_back(p.key(), p.value().detach().to(torch::kCPU, torch::kFloat32).contiguous());
  save_safetensors(file, tensors, to_metadata(options_));
}

CompressorOptions LococoCompressor::read_options(const std::filesystem::path& file) {
  return from_metadata(SafetensorsFile(file));
}

std::shared_ptr<LococoCompressor> LococoCompressor::load(const std::filesystem::path& path) {
  SafetensorsFile f(path);
  auto c = std::make_shared<LococoCompressor>(from_metadata(f));
  const std::string file = path.string();
  torch::NoGradGuard no_grad;
  auto params = c->named_parameters();
  for (const auto& p : params) {
    if (!f.contains(p.key()))
      throw std::runtime_error(fmt::format("{}: compressor tensor '{}' is missing", file, p.key()));
    const auto& info = f.info(p.key());
    if (torch::IntArrayRef(info.shape) != p.value().sizes())
      throw std::runtime_error(fmt::format("{}: compressor tensor '{}' has shape {}, the metadata implies {}", file,
                                           p.key(), shape_string(info.shape), shape_string(p.value().sizes())));
    auto t = f.tensor(p.key());
    if (!t.is_floating_point())
      throw std::runtime_error(fmt::format("{}: compressor tensor '{}' has dtype {}, not a float type", file,
                                           p.key(), info.dtype));
    p.value().copy_(t);
  }
  for (const auto& name : f.names())
    if (!params.contains(name))
      throw std::runtime_error(fmt::format("{}: unexpected tensor '{}' in a compressor file", file, name));
  return c;
}

std::shared_ptr<LococoCompressor> LococoCompressor::load(const std::filesystem::path& file, const ModelConfig& config,
                                                         const CacheOptions& cache) {
  auto c = load(file);
  const std::string why = c->options().mismatch(config, cache);
  if (!why.empty())
    throw std::runtime_error(fmt::format("{}: compressor does not fit this model and cache ({})", file.string(), why));
  return c;
}

}  // namespace lococo
