#include "lococo/model/weights.h"

#include <map>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/host_memory.h"
#include "lococo/core/io_util.h"

namespace lococo {

torch::Tensor project(const torch::Tensor& x, const torch::Tensor& weight) {
  // One row (decoding) in fp32: torch::mv streams W at the memory limit, while
  // linear/matmul with a single-row input runs several times slower on this
  // libtorch's CPU path. bf16/f16 keep linear (oneDNN).
  const int64_t in = weight.size(1);
  if (x.numel() == in && weight.scalar_type() == torch::kFloat32 && x.scalar_type() == torch::kFloat32 &&
      weight.device().is_cpu()) {
    auto shape = x.sizes().vec();
    shape.back() = weight.size(0);
    return torch::mv(weight, x.reshape({in})).view(shape);
  }
  return torch::linear(x, weight);
}

torch::Tensor Linear::forward(const torch::Tensor& x) const {
  torch::Tensor y = project(x, weight);
  if (bias.defined()) y = y + bias;
  if (lora_a.defined()) y = y + torch::linear(torch::linear(x, lora_a), lora_b) * lora_scale;
  return y;
}

namespace {

// named() for const and mutable weights alike: W is (const) LlamaWeights, T (const) torch::Tensor.
template <class T, class W>
std::vector<std::pair<std::string, T*>> named_tensors(W& w, const ModelConfig& config) {
  std::vector<std::pair<std::string, T*>> out;
  out.emplace_back("model.embed_tokens.weight", &w.embed);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    auto& l = w.layers[i];
    const std::string p = fmt::format("model.layers.{}.", i);
    out.emplace_back(p + "input_layernorm.weight", &l.attn_norm);
    const std::pair<const char*, decltype(&l.q)> attn[] = {{"q_proj", &l.q}, {"k_proj", &l.k}, {"v_proj", &l.v}, {"o_proj", &l.o}};
    for (auto [name, lin] : attn) {
      out.emplace_back(p + "self_attn." + name + ".weight", &lin->weight);
      if (lin->bias.defined()) out.emplace_back(p + "self_attn." + name + ".bias", &lin->bias);
    }
    out.emplace_back(p + "post_attention_layernorm.weight", &l.mlp_norm);
    out.emplace_back(p + "mlp.gate_proj.weight", &l.gate.weight);
    out.emplace_back(p + "mlp.up_proj.weight", &l.up.weight);
    out.emplace_back(p + "mlp.down_proj.weight", &l.down.weight);
  }
  out.emplace_back("model.norm.weight", &w.final_norm);
  if (!config.tie_word_embeddings) out.emplace_back("lm_head.weight", &w.lm_head);
  return out;
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor*>> LlamaWeights::named(const ModelConfig& config) {
  return named_tensors<torch::Tensor>(*this, config);
}

std::vector<std::pair<std::string, const torch::Tensor*>> LlamaWeights::named(const ModelConfig& config) const {
  return named_tensors<const torch::Tensor>(*this, config);
}

namespace {

// The expected shape of every tensor, keyed by HF name; the skeleton that both
// init and load fill.
LlamaWeights skeleton(const ModelConfig& c) {
  LlamaWeights w;
  auto shaped = [](std::vector<int64_t> s) { return torch::empty(s); };
  w.embed = shaped({c.vocab_size, c.hidden_size});
  w.layers.resize(c.num_layers);
  for (auto& l : w.layers) {
    l.attn_norm = shaped({c.hidden_size});
    l.q.weight = shaped({c.q_dim(), c.hidden_size});
    l.k.weight = shaped({c.kv_dim(), c.hidden_size});
    l.v.weight = shaped({c.kv_dim(), c.hidden_size});
    l.o.weight = shaped({c.hidden_size, c.q_dim()});
    if (c.attention_bias) {
      l.q.bias = shaped({c.q_dim()});
      l.k.bias = shaped({c.kv_dim()});
      l.v.bias = shaped({c.kv_dim()});
    }
    l.mlp_norm = shaped({c.hidden_size});
    l.gate.weight = shaped({c.intermediate_size, c.hidden_size});
    l.up.weight = shaped({c.intermediate_size, c.hidden_size});
    l.down.weight = shaped({c.hidden_size, c.intermediate_size});
  }
  w.final_norm = shaped({c.hidden_size});
  w.lm_head = c.tie_word_embeddings ? w.embed : shaped({c.vocab_size, c.hidden_size});
  return w;
}

void finish_tied(LlamaWeights& w, const ModelConfig& c) {
  if (c.tie_word_embeddings) w.lm_head = w.embed;
}

bool is_norm(const std::string& name) { return name.find("norm") != std::string::npos; }

}  // namespace

LlamaWeights init_weights(const ModelConfig& config, uint64_t seed, const ModelOptions& options) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  LlamaWeights w = skeleton(config);
  for (auto& [name, t] : w.named(config)) {
    torch::Tensor v;
    if (is_norm(name)) {
      v = torch::ones(t->sizes());
    } else if (name.find(".bias") != std::string::npos) {
      v = torch::zeros(t->sizes());
    } else {
      v = at::normal(0.0, 0.02, t->sizes(), gen);
    }
    *t = v.to(options.device, options.dtype);
  }
  finish_tied(w, config);
  return w;
}

LlamaWeights load_weights(const std::filesystem::path& dir, const ModelConfig& config,
                          const ModelOptions& options) {
  namespace fs = std::filesystem;
  // name -> shard file
  std::map<std::string, fs::path> where;
  std::map<fs::path, std::shared_ptr<SafetensorsFile>> files;
  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(single)) {
    auto f = std::make_shared<SafetensorsFile>(single);
    files[single] = f;
    for (const auto& n : f->names()) where[n] = single;
  } else if (fs::exists(index)) {
    const nlohmann::json j = parse_json(read_text_file(index), index.string());
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw std::runtime_error(index.string() + ": missing object 'weight_map'");
    for (const auto& [name, shard] : j["weight_map"].items()) {
      if (!shard.is_string()) throw std::runtime_error(index.string() + ": weight_map['" + name + "'] is not a string");
      const fs::path p = dir / shard.get<std::string>();
      if (!files.count(p)) files[p] = std::make_shared<SafetensorsFile>(p);
      where[name] = p;
    }
  } else {
    throw std::runtime_error(dir.string() + ": no model.safetensors or model.safetensors.index.json");
  }

  const fs::path listing = fs::exists(single) ? single : index;
  return load_weights_from(config, options, [&](const std::string& name) -> SourceTensor {
    auto it = where.find(name);
    if (it == where.end()) throw std::runtime_error(fmt::format("{}: missing tensor '{}'", listing.string(), name));
    return {files.at(it->second)->tensor(name), fmt::format("{}: tensor '{}'", it->second.string(), name)};
  }, "config.json");
}

LlamaWeights load_weights_from(const ModelConfig& config, const ModelOptions& options,
                               const std::function<SourceTensor(const std::string&)>& fetch,
                               const std::string& config_source) {
  torch::NoGradGuard no_grad;
  LlamaWeights w = skeleton(config);
  for (auto& [name, t] : w.named(config)) {
    const SourceTensor src = fetch(name);
    const torch::Tensor& v = src.value;
    if (v.sizes() != t->sizes())
      throw std::runtime_error(fmt::format("{} has shape {} but {} implies {}", src.origin, fmt::join(v.sizes(), "x"),
                                           config_source, fmt::join(t->sizes(), "x")));
    if (!v.is_floating_point())
      throw std::runtime_error(fmt::format("{} has non-float dtype {}", src.origin, c10::toString(v.scalar_type())));
    // Copied out of the mapping (and converted on the way) into memory of our
    // own: on the CPU, huge-page backed (host_memory.h).
    if (options.device.is_cpu()) {
      *t = empty_weight_tensor(v.sizes(), options.dtype);
      t->copy_(v);
    } else {
      *t = v.to(options.device, options.dtype).contiguous();
    }
  }
  finish_tied(w, config);
  return w;
}

void save_weights(const std::filesystem::path& dir, const ModelConfig& config, const LlamaWeights& weights,
                  torch::Dtype dtype) {
  NamedTensors out;
  for (auto& [name, t] : weights.named(config)) out.emplace_back(name, t->detach().to(torch::kCPU, dtype));
  save_safetensors(dir / "model.safetensors", out, {{"format", "pt"}});
}

}  // namespace lococo
