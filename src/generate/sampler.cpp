#include "lococo/generate/sampler.h"

#include <cmath>
#include <stdexcept>

namespace lococo {

Sampler::Sampler(SamplingOptions options) : options_(options), rng_(options.seed) {
  if (options_.temperature < 0) throw std::invalid_argument("--temperature must be >= 0");
  if (options_.top_k < 0) throw std::invalid_argument("--top-k must be >= 0");
  if (!(options_.top_p > 0 && options_.top_p <= 1)) throw std::invalid_argument("--top-p must be in (0, 1]");
}

torch::Tensor Sampler::candidate_probs(const torch::Tensor& logits_in) const {
  auto logits = logits_in.to(torch::kFloat32).reshape({-1});                    // [V]
  const int64_t V = logits.size(0);
  const double temp = options_.temperature > 0 ? options_.temperature : 1.0;
  auto [sorted, order] = torch::sort(logits / temp, /*dim=*/0, /*descending=*/true);  // [V]
  int64_t keep = V;
  if (options_.top_k > 0) keep = std::min(keep, options_.top_k);
  auto probs = torch::softmax(sorted.narrow(0, 0, keep), 0);                     // [keep]
  if (options_.top_p < 1.0) {
    // Smallest prefix whose mass reaches top_p: token i stays if the mass
    // before it is still below top_p.
    auto before = torch::cumsum(probs, 0) - probs;
    const int64_t n = (before < options_.top_p).sum().item<int64_t>();
    keep = std::max<int64_t>(n, 1);
    probs = probs.narrow(0, 0, keep);
    probs = probs / probs.sum();
  }
  auto out = torch::zeros({V});
  out.index_put_({order.narrow(0, 0, keep)}, probs);
  return out;
}

int64_t greedy_token(const torch::Tensor& logits) {
  if (logits.scalar_type() != torch::kFloat32 || !logits.is_contiguous() || !logits.device().is_cpu() ||
      logits.numel() == 0)
    return logits.argmax().item<int64_t>();
  const float* p = logits.data_ptr<float>();
  int64_t best = 0;
  for (int64_t i = 1; i < logits.numel(); ++i)
    if (p[i] > p[best] || (std::isnan(p[i]) && !std::isnan(p[best]))) best = i;
  return best;
}

int64_t Sampler::sample(const torch::Tensor& logits) {
  if (options_.temperature == 0.0) return greedy_token(logits);
  auto probs = candidate_probs(logits).contiguous();
  const float* p = probs.data_ptr<float>();
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  double u = uniform(rng_), acc = 0.0;
  int64_t last_nonzero = 0;
  for (int64_t i = 0; i < probs.size(0); ++i) {
    if (p[i] <= 0) continue;
    last_nonzero = i;
    acc += p[i];
    if (u < acc) return i;
  }
  return last_nonzero;  // rounding left u above the total mass
}

}  // namespace lococo
