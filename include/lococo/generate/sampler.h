// Token sampling: greedy, temperature, top-k, top-p (nucleus), seeded.
#pragma once

#include <cstdint>
#include <random>

#include <torch/torch.h>

namespace lococo {

struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = all
  double top_p = 1.0;        // keep the smallest set whose probability reaches p; 1 = all
  uint64_t seed = 0;         // random stream of the sampler
};

// argmax of logits [V] (the first of equal maxima, as torch::argmax); no
// allocation for contiguous fp32 logits, so greedy decoding allocates nothing.
int64_t greedy_token(const torch::Tensor& logits);

class Sampler {
 public:
  explicit Sampler(SamplingOptions options);
  // logits [V] fp32 -> token id.
  int64_t sample(const torch::Tensor& logits);
  // The probabilities sampling draws from after temperature, top-k and top-p:
  // [V], zeros outside the kept candidates, summing to 1.
  torch::Tensor candidate_probs(const torch::Tensor& logits) const;
  const SamplingOptions& options() const { return options_; }

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace lococo
