#include "lococo/eval/passkey.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include <fmt/format.h>

namespace lococo {
namespace {

const char* kInstruction =
    "There is an important pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the pass key.";
const char* kFiller = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const char* kQuestion = " What is the pass key? The pass key is";

void append(std::vector<int64_t>& out, const std::vector<int64_t>& more) { out.insert(out.end(), more.begin(), more.end()); }

}  // namespace

PasskeyExample make_passkey_example(const Tokenizer& tok, int64_t length, double depth, std::mt19937_64& rng,
                                    const std::vector<int64_t>* corpus, bool shuffle_filler) {
  if (!(depth >= 0.0 && depth <= 1.0)) throw std::invalid_argument(fmt::format("passkey depth {} outside [0, 1]", depth));
  if (corpus && corpus->empty()) throw std::invalid_argument("passkey filler: the corpus has no tokens");
  PasskeyExample ex;
  ex.key = fmt::format("{:05d}", std::uniform_int_distribution<int>(10000, 99999)(rng));
  const auto head = tok.encode(kInstruction, /*add_bos=*/true);
  const auto needle = tok.encode(fmt::format(" The pass key is {}. Remember it. {} is the pass key.", ex.key, ex.key));
  const auto question = tok.encode(kQuestion);
  const int64_t fixed = static_cast<int64_t>(head.size() + needle.size() + question.size());
  if (fixed > length)
    throw std::invalid_argument(fmt::format("passkey length {} is shorter than the fixed text ({} tokens)", length, fixed));
  // The filler as units: whole sentences groups, or corpus tokens one by one.
  std::vector<std::vector<int64_t>> units;
  if (corpus) {
    auto at = std::uniform_int_distribution<size_t>(0, corpus->size() - 1)(rng);
    for (int64_t i = 0; i < length - fixed; ++i, at = (at + 1) % corpus->size()) units.push_back({(*corpus)[at]});
    if (shuffle_filler) std::shuffle(units.begin(), units.end(), rng);
  } else {
    const auto sentences = tok.encode(kFiller);
    units.assign(static_cast<size_t>((length - fixed) / static_cast<int64_t>(sentences.size())), sentences);
  }
  const auto before = static_cast<size_t>(std::llround(depth * static_cast<double>(units.size())));
  ex.prompt = head;
  for (size_t i = 0; i < before; ++i) append(ex.prompt, units[i]);
  ex.key_offset = static_cast<int64_t>(ex.prompt.size());
  append(ex.prompt, needle);
  for (size_t i = before; i < units.size(); ++i) append(ex.prompt, units[i]);
  append(ex.prompt, question);
  ex.answer = tok.encode(" " + ex.key);
  // SentencePiece may fold the leading space into the first piece differently in
  // context; the prompt ends with "is" so " 12345" is the natural continuation.
  return ex;
}

int64_t passkey_min_length(const Tokenizer& tok) {
  const auto n = tok.encode(kInstruction, true).size() + tok.encode(kQuestion).size() +
                 tok.encode(" The pass key is 12345. Remember it. 12345 is the pass key.").size();
  return static_cast<int64_t>(n);
}

bool passkey_correct(const std::string& generated, const std::string& key) {
  size_t i = 0;
  while (i < generated.size() && std::isspace(static_cast<unsigned char>(generated[i]))) ++i;
  if (generated.compare(i, key.size(), key) != 0) return false;
  const size_t after = i + key.size();
  return after >= generated.size() || !std::isdigit(static_cast<unsigned char>(generated[after]));
}

}  // namespace lococo
