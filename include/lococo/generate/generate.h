// Text generation: chunked prefill of the prompt, then a token-by-token decode
// loop with sampling, EOS and stop strings; text streams through a callback.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "lococo/kv/cache.h"
#include "lococo/model/model.h"
#include "lococo/generate/sampler.h"
#include "lococo/tokenizer/tokenizer.h"

namespace lococo {

// Text of a growing token sequence, decoding only the last few tokens per new
// one (a whole-sequence decode per token is quadratic in the length): the text
// of the window [prefix, end) minus that of [prefix, read) is what the new
// tokens add, as detokenizers of streaming servers do. A window whose text
// ends mid-character, or that a tokenizer renders differently once extended,
// waits for more tokens.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  void push(int64_t id);
  // Committed text: equal to decoding every token pushed, less a pending tail.
  const std::string& text() const { return text_; }
  // Everything, the pending tail included (at the end of a stream).
  std::string text_with_pending() const;

 private:
  std::string decode(size_t begin, size_t end) const;  // ids_[begin, end)
  const Tokenizer& tokenizer_;
  std::vector<int64_t> ids_;
  size_t prefix_ = 0, read_ = 0;  // the window [prefix_, end); [prefix_, read_) is committed
  std::string text_;              // committed text
  std::string pending_;           // the window's text while it waits
  size_t pending_cut_ = 0;        // bytes at the end of text_ that pending_ renders again
};

// A generated token's log-probability under the model (the logits' softmax,
// before temperature or top-k/p) and the most likely tokens at its step.
struct TokenLogprob {
  int64_t id = 0;
  double logprob = 0;
  std::vector<std::pair<int64_t, double>> top;  // (id, logprob), most likely first
};

struct GenerateOptions {
  int64_t max_tokens = 128;         // tokens to generate at most
  int64_t chunk = 512;              // prompt tokens per forward (prefill chunk)
  bool add_bos = true;              // prepend BOS to the prompt
  bool stop_at_eos = true;          // end at the EOS token
  std::vector<std::string> stop;    // end when the text contains one of these (not emitted)
  SamplingOptions sampling;
  int64_t top_logprobs = -1;        // -1: no log-probabilities; else each token's and this many alternatives
  // Called with each generated token's entry as it is sampled (before the
  // text it adds reaches the text callback); top_logprobs >= 0 only.
  std::function<void(const TokenLogprob&)> on_logprob;
};

struct GenerateResult {
  std::string text;                 // generated text (stop string excluded)
  std::vector<int64_t> tokens;      // generated token ids
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  std::string finish_reason;        // "length" | "eos" | "stop" | "cancelled"
  std::vector<TokenLogprob> logprobs;  // one per generated token when top_logprobs >= 0
};

// Called with each new piece of text as soon as it is safe to emit (never part
// of a stop string). Return false to cancel.
using TextCallback = std::function<bool(const std::string& piece)>;

// Runs the prompt tokens through `cache` (which should be fresh) and generates.
GenerateResult generate(const LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                        const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        const TextCallback& on_text = nullptr);

// The decode loop alone: generates from `logits` [V], the next-token logits
// after what `cache` has read (prefill's, or a saved state's); prompt_tokens
// and prefill_seconds stay 0.
GenerateResult continue_generation(const LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                                   torch::Tensor logits, const GenerateOptions& options,
                                   const TextCallback& on_text = nullptr);

// Feeds `tokens` through the model in chunks of `chunk`; returns the logits of
// the last token [V]. `on_progress` (optional) hears the tokens read after
// each chunk; when it returns false, reading stops there and the result is an
// undefined tensor (the cache then holds a partial prompt).
using PrefillProgress = std::function<bool(int64_t done)>;
torch::Tensor prefill(const LlamaModel& model, KvCache& cache, const std::vector<int64_t>& tokens, int64_t chunk,
                      const PrefillProgress& on_progress = nullptr);

// A prompt read as it arrives, for texts too large to hold (a log of a
// gigabyte): token ids are fed piece by piece and run chunk by chunk, in the
// same chunks as prefill() of the whole prompt, so the result is the same
// while memory holds less than one chunk of ids.
class PrefillStream {
 public:
  PrefillStream(const LlamaModel& model, KvCache& cache, int64_t chunk);
  // Appends ids; every complete chunk runs now.
  void feed(const std::vector<int64_t>& ids);
  // Runs what is left; the logits after the last token [V]. Throws when nothing was fed.
  torch::Tensor finish();
  int64_t tokens() const { return fed_; }  // fed so far

 private:
  const LlamaModel& model_;
  KvCache& cache_;
  int64_t chunk_;
  std::vector<int64_t> pending_;  // fed, not yet run (< chunk)
  torch::Tensor logits_;          // [V] after the last chunk run, or undefined
  int64_t fed_ = 0;
};

}  // namespace lococo
