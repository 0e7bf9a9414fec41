// Passkey retrieval (docs/DESIGN.md section 6): a 5-digit key hidden at a chosen
// depth inside filler text; the model must continue "The pass key is" with it.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "lococo/tokenizer/tokenizer.h"

namespace lococo {

struct PasskeyExample {
  std::vector<int64_t> prompt;   // BOS, instruction, filler with the key sentence, question
  std::string key;               // five digits
  int64_t key_offset = 0;        // token index in `prompt` where the key sentence starts
  std::vector<int64_t> answer;   // tokens of " " + key as the model should produce them
};

// Builds a prompt of about `length` tokens (never more) with the key sentence
// at `depth` in [0, 1] of the filler (0 = start, 1 = end). The filler is the
// classic repeated sentences ("The grass is green. ..."), or with `corpus`
// (token ids, non-empty) a window of it from a random offset (wrapping around),
// so that retrieval is measured on text the model did not learn it with;
// `shuffle_filler` shuffles that window's tokens.
PasskeyExample make_passkey_example(const Tokenizer& tokenizer, int64_t length, double depth, std::mt19937_64& rng,
                                    const std::vector<int64_t>* corpus = nullptr, bool shuffle_filler = false);

// The shortest prompt length make_passkey_example accepts (no filler at all).
int64_t passkey_min_length(const Tokenizer& tokenizer);

// True when `generated` starts with the key (leading spaces ignored) and the
// key is not followed by another digit.
bool passkey_correct(const std::string& generated, const std::string& key);

}  // namespace lococo
