#include "lococo/model/lora.h"

#include <stdexcept>

#include <fmt/format.h>

namespace lococo {
namespace {

// (HF projection name, member) for every attention projection of a layer.
std::vector<std::pair<std::string, Linear*>> projections(LayerWeights& l) {
  return {{"q", &l.q}, {"k", &l.k}, {"v", &l.v}, {"o", &l.o}};
}

std::string adapter_name(size_t layer, const std::string& proj, const char* which) {
  return fmt::format("model.layers.{}.self_attn.{}_proj.lora_{}", layer, proj, which);
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> attach_lora(LlamaModel& model, const LoraOptions& o) {
  if (o.rank <= 0) throw std::invalid_argument("--lora-rank must be positive");
  for (const auto& t : o.targets)
    if (t != "q" && t != "k" && t != "v" && t != "o")
      throw std::invalid_argument("--lora-targets: unknown projection '" + t + "' (use q, k, v, o)");
  auto gen = at::detail::createCPUGenerator(o.seed);
  auto& layers = model.mutable_weights().layers;
  for (size_t i = 0; i < layers.size(); ++i)
    for (auto& [name, lin] : projections(layers[i])) {
      if (std::find(o.targets.begin(), o.targets.end(), name) == o.targets.end()) continue;
      const auto opts = lin->weight.options().requires_grad(false);
      // A like nn.Linear's default init (uniform, bound 1/sqrt(in)); B zero.
      const double bound = 1.0 / std::sqrt(static_cast<double>(lin->in_features()));
      lin->lora_a = at::empty({o.rank, lin->in_features()}, opts).uniform_(-bound, bound, gen).requires_grad_(true);
      lin->lora_b = torch::zeros({lin->out_features(), o.rank}, opts).requires_grad_(true);
      lin->lora_scale = o.alpha / static_cast<double>(o.rank);
    }
  return lora_tensors(model);
}

std::vector<std::pair<std::string, torch::Tensor>> lora_tensors(LlamaModel& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto& layers = model.mutable_weights().layers;
  for (size_t i = 0; i < layers.size(); ++i)
    for (auto& [name, lin] : projections(layers[i]))
      if (lin->lora_a.defined()) {
        out.emplace_back(adapter_name(i, name, "A"), lin->lora_a);
        out.emplace_back(adapter_name(i, name, "B"), lin->lora_b);
      }
  return out;
}

void merge_lora(LlamaModel& model) {
  torch::NoGradGuard g;
  for (auto& l : model.mutable_weights().layers)
    for (auto& [name, lin] : projections(l)) {
      if (!lin->lora_a.defined()) continue;
      lin->weight = (lin->weight + lin->lora_scale * torch::matmul(lin->lora_b, lin->lora_a)).detach();  // [out, in]
      lin->lora_a = torch::Tensor();
      lin->lora_b = torch::Tensor();
      lin->lora_scale = 0.0;
    }
}

}  // namespace lococo
