// Streaming perplexity: a token sequence goes through the model in chunks under
// a KV-cache policy; every token after the first is scored by the logits of the
// token before it. PerplexityStream takes the tokens piece by piece, so memory
// does not grow with the input (only the cache's own policy decides that).
#pragma once

#include <functional>
#include <vector>

#include "lococo/kv/cache.h"
#include "lococo/model/model.h"

namespace lococo {

struct PerplexityOptions {
  int64_t chunk = 512;                                           // tokens per forward
  bool keep_nll = true;                                          // keep every token's NLL in the result
  std::function<void(int64_t done, int64_t total)> on_progress;  // optional; total is 0 when unknown
  // Optional: the NLLs of each chunk as it is scored; nll[i] scores the
  // token at `position + i` (positions count from the stream's first token).
  std::function<void(int64_t position, const float* nll, int64_t n)> on_nll;
};

struct PerplexityResult {
  std::vector<float> nll;  // nll[i] = -log p(token[i+1] | token[0..i]); size N - 1 (when kept)
  double nll_sum = 0;      // over every scored token
  int64_t scored = 0;      // tokens scored: N - 1
  double seconds = 0;      // wall time of the forwards
  int64_t tokens = 0;      // tokens fed
  double mean_nll() const { return scored > 0 ? nll_sum / static_cast<double>(scored) : 0.0; }
  double perplexity() const;
  double tokens_per_second() const { return seconds > 0 ? tokens / seconds : 0; }
};

class PerplexityStream {
 public:
  PerplexityStream(const LlamaModel& model, KvCache& cache, PerplexityOptions options);
  // Appends tokens; every complete chunk runs now, the rest waits for more.
  void feed(const std::vector<int64_t>& tokens);
  // Runs what is left and returns the totals. Throws when fewer than 2 tokens came.
  PerplexityResult finish();

 private:
  void run_chunk(const std::vector<int64_t>& ids);

  const LlamaModel& model_;
  KvCache& cache_;
  PerplexityOptions options_;
  std::vector<int64_t> pending_;  // fed, not yet run (< chunk)
  torch::Tensor last_logp_;       // [V] log-probabilities after the last token run, or undefined
  PerplexityResult result_;
};

// The whole sequence at once (a PerplexityStream fed once).
PerplexityResult streaming_perplexity(const LlamaModel& model, KvCache& cache, const std::vector<int64_t>& tokens,
                                      const PerplexityOptions& options);

}  // namespace lococo
