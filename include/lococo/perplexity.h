// Streaming perplexity: a token sequence goes through the model in chunks under
// a KV-cache policy; every token after the first is scored by the logits of the
// token before it.
#pragma once

#include <functional>
#include <vector>

#include "lococo/kv_cache.h"
#include "lococo/model.h"

namespace lococo {

struct PerplexityOptions {
  int64_t chunk = 512;                                   // tokens per forward
  std::function<void(int64_t done, int64_t total)> on_progress;  // optional
};

struct PerplexityResult {
  std::vector<float> nll;  // nll[i] = -log p(token[i+1] | token[0..i]); size N - 1
  double seconds = 0;      // wall time of the forwards
  int64_t tokens = 0;      // tokens fed
  double mean_nll() const;
  double perplexity() const;
  double tokens_per_second() const { return seconds > 0 ? tokens / seconds : 0; }
};

PerplexityResult streaming_perplexity(const LlamaModel& model, KvCache& cache, const std::vector<int64_t>& tokens,
                                      const PerplexityOptions& options);

}  // namespace lococo
