#include "lococo/eval/perplexity.h"

#include <chrono>
#include <cmath>
#include <stdexcept>

namespace lococo {

double PerplexityResult::perplexity() const { return std::exp(mean_nll()); }

PerplexityStream::PerplexityStream(const LlamaModel& model, KvCache& cache, PerplexityOptions options)
    : model_(model), cache_(cache), options_(std::move(options)) {
  if (options_.chunk <= 0) throw std::invalid_argument("--chunk must be positive");
  pending_.reserve(options_.chunk);
}

void PerplexityStream::feed(const std::vector<int64_t>& tokens) {
  for (int64_t t : tokens) {
    pending_.push_back(t);
    if (static_cast<int64_t>(pending_.size()) == options_.chunk) {
      run_chunk(pending_);
      pending_.clear();
    }
  }
}

void PerplexityStream::run_chunk(const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t n = static_cast<int64_t>(ids.size());
  auto chunk = torch::tensor(ids, torch::kInt64);  // [n]
  auto logits = model_.forward(chunk, &cache_)[0];  // [n, V]
  // -log p = logsumexp(row) - row[target]: no log-softmax copy of the logits.
  auto lse = torch::logsumexp(logits, -1);  // [n]
  // Targets: this chunk's tokens 1..n-1 by its own rows 0..n-2, and its token 0
  // by the previous chunk's last row.
  std::vector<torch::Tensor> scores;
  if (last_logp_.defined()) scores.push_back(-last_logp_.index({ids[0]}).reshape({1}));
  if (n > 1)
    scores.push_back(lse.narrow(0, 0, n - 1) -
                     logits.narrow(0, 0, n - 1).gather(1, chunk.narrow(0, 1, n - 1).unsqueeze(1)).squeeze(1));
  last_logp_ = logits[n - 1] - lse[n - 1];  // [V]
  if (!scores.empty()) {
    auto nll = torch::cat(scores).contiguous();  // [scored here]
    const float* p = nll.data_ptr<float>();
    for (int64_t i = 0; i < nll.size(0); ++i) result_.nll_sum += p[i];
    if (options_.keep_nll) result_.nll.insert(result_.nll.end(), p, p + nll.size(0));
    if (options_.on_nll) options_.on_nll(result_.scored + 1, p, nll.size(0));
    result_.scored += nll.size(0);
  }
  result_.tokens += n;
  result_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (options_.on_progress) options_.on_progress(result_.tokens, 0);
}

PerplexityResult PerplexityStream::finish() {
  if (!pending_.empty()) run_chunk(pending_);
  pending_.clear();
  if (result_.tokens < 2) throw std::invalid_argument("perplexity needs at least 2 tokens");
  return result_;
}

PerplexityResult streaming_perplexity(const LlamaModel& model, KvCache& cache, const std::vector<int64_t>& tokens,
                                      const PerplexityOptions& o) {
  if (tokens.size() < 2) throw std::invalid_argument("perplexity needs at least 2 tokens");
  PerplexityOptions with_total = o;
  const auto total = static_cast<int64_t>(tokens.size());
  if (o.on_progress) with_total.on_progress = [&](int64_t done, int64_t) { o.on_progress(done, total); };
  PerplexityStream stream(model, cache, with_total);
  stream.feed(tokens);
  return stream.finish();
}

}  // namespace lococo
