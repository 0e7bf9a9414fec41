#include "lococo/perplexity.h"

#include <chrono>
#include <cmath>
#include <stdexcept>

namespace lococo {

double PerplexityResult::mean_nll() const {
  if (nll.empty()) return 0.0;
  double s = 0;
  for (float x : nll) s += x;
  return s / static_cast<double>(nll.size());
}

double PerplexityResult::perplexity() const { return std::exp(mean_nll()); }

PerplexityResult streaming_perplexity(const LlamaModel& model, KvCache& cache, const std::vector<int64_t>& tokens,
                                      const PerplexityOptions& o) {
  if (tokens.size() < 2) throw std::invalid_argument("perplexity needs at least 2 tokens");
  if (o.chunk <= 0) throw std::invalid_argument("--chunk must be positive");
  torch::NoGradGuard no_grad;
  const int64_t N = static_cast<int64_t>(tokens.size());
  auto all = torch::tensor(tokens, torch::kInt64);                          // [N]
  PerplexityResult r;
  r.nll.reserve(N - 1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < N; s += o.chunk) {
    const int64_t n = std::min(o.chunk, N - s);
    auto logits = model.forward(all.narrow(0, s, n), &cache)[0];             // [n, V]
    // Chunk positions s..s+n-1 predict tokens s+1..s+n (the last one may be past the end).
    const int64_t scored = std::min(n, N - 1 - s);
    if (scored > 0) {
      auto logp = torch::log_softmax(logits.narrow(0, 0, scored), -1);      // [scored, V]
      auto target = all.narrow(0, s + 1, scored).unsqueeze(1);              // [scored, 1]
      auto nll = -logp.gather(1, target).squeeze(1).contiguous();           // [scored]
      const float* p = nll.data_ptr<float>();
      r.nll.insert(r.nll.end(), p, p + scored);
    }
    if (o.on_progress) o.on_progress(s + n, N);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens = N;
  return r;
}

}  // namespace lococo
