#include "lococo/generate/generate.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "lococo/model/decode.h"

namespace lococo {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Length of the longest suffix of `text` that is a proper prefix of a stop
// string: that much text must be held back until the next token decides.
size_t held_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& s : stops)
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n)
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  return hold;
}

// UTF-8: a trailing incomplete multi-byte sequence is held back too.
size_t incomplete_utf8_tail(const std::string& text) {
  for (size_t back = 1; back <= std::min<size_t>(3, text.size()); ++back) {
    const auto c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;             // continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

TokenLogprob token_logprob(const torch::Tensor& logits, int64_t id, int64_t top) {
  auto lp = torch::log_softmax(logits.to(torch::kFloat32), 0);  // [V]
  TokenLogprob t{id, lp[id].item<double>(), {}};
  if (top > 0) {
    auto [values, ids] = lp.topk(std::min<int64_t>(top, lp.size(0)));
    for (int64_t i = 0; i < values.size(0); ++i) t.top.emplace_back(ids[i].item<int64_t>(), values[i].item<double>());
  }
  return t;
}

}  // namespace

namespace {
bool ends_with_replacement_char(const std::string& text) {
  static const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD: bytes a tokenizer could not render yet
  return text.size() >= kReplacement.size() && text.compare(text.size() - kReplacement.size(), kReplacement.size(), kReplacement) == 0;
}
}  // namespace

std::string IncrementalDetokenizer::decode(size_t begin, size_t end) const {
  return tokenizer_.decode({ids_.begin() + static_cast<std::ptrdiff_t>(begin), ids_.begin() + static_cast<std::ptrdiff_t>(end)});
}

void IncrementalDetokenizer::push(int64_t id) {
  ids_.push_back(id);
  const std::string before = decode(prefix_, read_);  // what the window's committed tokens render as
  const std::string now = decode(prefix_, ids_.size());
  // Committed once the window's text extends what it was without the new
  // tokens and ends on a whole character; until then the window grows.
  if (now.size() < before.size() || now.compare(0, before.size(), before) != 0 || incomplete_utf8_tail(now) > 0 ||
      ends_with_replacement_char(now)) {
    pending_ = now;
    pending_cut_ = before.size();
    return;
  }
  text_ += now.substr(before.size());
  pending_.clear();
  pending_cut_ = 0;
  // The next window starts at the tokens just committed, unless they render
  // as nothing on their own (a control token): a piece after them would then
  // lose its leading space as the first of the window.
  if (!decode(read_, ids_.size()).empty()) prefix_ = read_;
  read_ = ids_.size();
}

std::string IncrementalDetokenizer::text_with_pending() const {
  if (pending_cut_ == 0 && pending_.empty()) return text_;
  const std::string before = decode(prefix_, read_);
  if (text_.size() < before.size() || text_.compare(text_.size() - before.size(), before.size(), before) != 0)
    return decode(0, ids_.size());  // the window's text does not line up: decode it all (once, at the end)
  return text_.substr(0, text_.size() - pending_cut_) + pending_;
}

torch::Tensor prefill(const LlamaModel& model, KvCache& cache, const std::vector<int64_t>& tokens, int64_t chunk,
                      const PrefillProgress& on_progress) {
  if (tokens.empty()) throw std::invalid_argument("prompt is empty");
  if (chunk <= 0) throw std::invalid_argument("--chunk must be positive");
  torch::NoGradGuard no_grad;
  auto all = torch::tensor(tokens, torch::kInt64);
  torch::Tensor last;
  for (int64_t s = 0; s < static_cast<int64_t>(tokens.size()); s += chunk) {
    const int64_t n = std::min<int64_t>(chunk, tokens.size() - s);
    last = model.forward(all.narrow(0, s, n), &cache, LogitsFor::Last);  // [1, 1, V]
    if (on_progress && !on_progress(s + n)) return {};
  }
  return last.reshape({-1});
}

GenerateResult generate(const LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                        const std::vector<int64_t>& prompt_in, const GenerateOptions& o, const TextCallback& on_text) {
  if (o.max_tokens < 0) throw std::invalid_argument("--max-tokens must be >= 0");
  std::vector<int64_t> prompt = prompt_in;
  if (o.add_bos && (prompt.empty() || prompt[0] != tokenizer.bos_id())) prompt.insert(prompt.begin(), tokenizer.bos_id());
  torch::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  torch::Tensor logits = prefill(model, cache, prompt, o.chunk);            // [V]
  const double prefill_seconds = seconds_since(t0);
  GenerateResult r = continue_generation(model, tokenizer, cache, logits, o, on_text);
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  r.prefill_seconds = prefill_seconds;
  return r;
}

GenerateResult continue_generation(const LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                                   torch::Tensor logits, const GenerateOptions& o, const TextCallback& on_text) {
  if (o.max_tokens < 0) throw std::invalid_argument("--max-tokens must be >= 0");
  GenerateResult r;
  torch::NoGradGuard no_grad;
  Sampler sampler(o.sampling);
  const auto t0 = std::chrono::steady_clock::now();
  IncrementalDetokenizer detok(tokenizer);
  std::string text;       // everything decoded so far
  size_t emitted = 0;     // bytes of `text` handed to on_text
  r.finish_reason = "length";
  // One token at a time: the allocation-free path where it applies.
  std::unique_ptr<DecodeState> state;
  if (decode_step_supported(model)) state = std::make_unique<DecodeState>(model.config());
  auto token = torch::empty({1}, torch::kInt64);
  for (int64_t step = 0; step < o.max_tokens; ++step) {
    const int64_t id = sampler.sample(logits);
    if (o.stop_at_eos && id == tokenizer.eos_id()) {
      r.finish_reason = "eos";
      break;
    }
    r.tokens.push_back(id);
    if (o.top_logprobs >= 0) {
      r.logprobs.push_back(token_logprob(logits, id, o.top_logprobs));
      if (o.on_logprob) o.on_logprob(r.logprobs.back());
    }
    detok.push(id);
    text = detok.text();
    size_t stop_at = std::string::npos;
    for (const auto& s : o.stop)
      if (!s.empty()) stop_at = std::min(stop_at, text.find(s, emitted > s.size() ? emitted - s.size() : 0));
    const bool stopped = stop_at != std::string::npos;
    const size_t safe = stopped ? stop_at : text.size() - std::max(held_back(text, o.stop), incomplete_utf8_tail(text));
    if (safe > emitted && on_text && !on_text(text.substr(emitted, safe - emitted))) {
      r.finish_reason = "cancelled";
      emitted = safe;
      break;
    }
    emitted = std::max(emitted, safe);
    if (stopped) {
      text.resize(stop_at);
      r.finish_reason = "stop";
      break;
    }
    if (step + 1 == o.max_tokens) break;
    if (state) {
      logits = decode_step(model, cache, id, *state);
    } else {
      token[0] = id;
      logits = model.forward(token, &cache, LogitsFor::Last).reshape({-1});
    }
  }
  if (r.finish_reason != "stop") text = detok.text_with_pending();
  if (r.finish_reason != "stop" && r.finish_reason != "cancelled" && emitted < text.size() && on_text)
    on_text(text.substr(emitted));
  r.text = text;
  r.decode_seconds = seconds_since(t0);
  return r;
}

PrefillStream::PrefillStream(const LlamaModel& model, KvCache& cache, int64_t chunk)
    : model_(model), cache_(cache), chunk_(chunk) {
  if (chunk <= 0) throw std::invalid_argument("--chunk must be positive");
}

void PrefillStream::feed(const std::vector<int64_t>& ids) {
  fed_ += static_cast<int64_t>(ids.size());
  pending_.insert(pending_.end(), ids.begin(), ids.end());
  const auto whole = static_cast<int64_t>(pending_.size()) / chunk_ * chunk_;
  if (whole == 0) return;
  const std::vector<int64_t> run(pending_.begin(), pending_.begin() + whole);
  logits_ = prefill(model_, cache_, run, chunk_);
  pending_.erase(pending_.begin(), pending_.begin() + whole);
}

torch::Tensor PrefillStream::finish() {
  if (!pending_.empty()) logits_ = prefill(model_, cache_, pending_, chunk_);
  pending_.clear();
  if (!logits_.defined()) throw std::invalid_argument("prompt is empty");
  return logits_;
}

}  // namespace lococo
