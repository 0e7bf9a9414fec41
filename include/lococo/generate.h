// Text generation: chunked prefill of the prompt, then a token-by-token decode
// loop with sampling, EOS and stop strings; text streams through a callback.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "lococo/kv_cache.h"
#include "lococo/model.h"
#include "lococo/sampler.h"
#include "lococo/tokenizer.h"

namespace lococo {

struct GenerateOptions {
  int64_t max_tokens = 128;         // tokens to generate at most
  int64_t chunk = 512;              // prompt tokens per forward (prefill chunk)
  bool add_bos = true;              // prepend BOS to the prompt
  bool stop_at_eos = true;          // end at the EOS token
  std::vector<std::string> stop;    // end when the text contains one of these (not emitted)
  SamplingOptions sampling;
};

struct GenerateResult {
  std::string text;                 // generated text (stop string excluded)
  std::vector<int64_t> tokens;      // generated token ids
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  std::string finish_reason;        // "length" | "eos" | "stop" | "cancelled"
};

// Called with each new piece of text as soon as it is safe to emit (never part
// of a stop string). Return false to cancel.
using TextCallback = std::function<bool(const std::string& piece)>;

// Runs the prompt tokens through `cache` (which should be fresh) and generates.
GenerateResult generate(const LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                        const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        const TextCallback& on_text = nullptr);

// Feeds `tokens` through the model in chunks of `chunk`; returns the logits of
// the last token [V].
torch::Tensor prefill(const LlamaModel& model, KvCache& cache, const std::vector<int64_t>& tokens, int64_t chunk);

}  // namespace lococo
