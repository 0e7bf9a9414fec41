// Training a SentencePiece tokenizer: with keep_whitespace, text round-trips
// with its newlines and indentation (what llama.cpp assumes of a vocabulary);
// SentencePiece's default normaliser folds them into single spaces.
#include <gtest/gtest.h>

#include "lococo/model/model_dir.h"
#include "lococo/tokenizer/tokenizer.h"
#include "test_util.h"

namespace lococo {
namespace {

TEST(TrainSentencePiece, KeepWhitespaceRoundTripsNewlinesAndIndentation) {
  testing::TempDir dir;
  const std::string text = "line one\nline two\n\n  indented,   spaced";
  for (const bool keep : {true, false}) {
    TokenizerTrainOptions o;
    o.vocab_size = 400;
    o.hard_vocab_limit = false;
    o.keep_whitespace = keep;
    const auto file = dir.path() / (keep ? "keep.model" : "default.model");
    train_sentencepiece(builtin_sample_text(), file, o);
    SentencePieceTokenizer tok(file);
    const std::string back = tok.decode(tok.encode(text));
    if (keep)
      EXPECT_EQ(back, text);
    else
      EXPECT_EQ(back, "line one line two indented, spaced");  // the default normaliser's folding
  }
}

}  // namespace
}  // namespace lococo
