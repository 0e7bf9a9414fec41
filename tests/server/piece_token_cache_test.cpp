// Long prompts tokenised piece by piece, with pieces remembered, give exactly
// the ids of tokenising them whole, also when a later prompt extends an
// earlier one (the book sent again with a question).
#include <gtest/gtest.h>

#include "lococo/tokenizer/tokenizer.h"
#include "server/piece_token_cache.h"
#include "test_util.h"

namespace lococo {
namespace {

TEST(PieceTokenCache, LongPromptsEqualWholeTokenisation) {
  testing::TempDir dir;
  const LoadedModel m = testing::tokenized_tiny_model(dir.path());
  server_detail::PieceTokenCache cache(*m.tokenizer, 1 << 20);
  ASSERT_TRUE(cache.piecewise());  // SentencePiece with whitespace kept: line ends cut exactly
  std::string book;
  for (int i = 0; book.size() < 200000; ++i)
    book += (i % 7 == 0 ? "\n" : "") + std::string(i % 3, ' ') + "Line " + std::to_string(i) +
            ": the whale swam past the ship.\n";
  EXPECT_EQ(*cache.encode(book), m.tokenizer->encode(book));
  const std::string asked = book + "\nQuestion: who swam?\nAnswer:";
  EXPECT_EQ(*cache.encode(asked), m.tokenizer->encode(asked));  // the book's pieces from memory
  EXPECT_EQ(*cache.encode("short"), m.tokenizer->encode("short"));
  server_detail::PieceTokenCache tiny(*m.tokenizer, 10);  // a capacity below one piece still works
  EXPECT_EQ(*tiny.encode(asked), m.tokenizer->encode(asked));
}

// The bundled model's tokenizer opens a text with a word-start marker (SentencePiece's
// dummy prefix): pieces after a line end are tokenised as such, and equal the whole text.
TEST(PieceTokenCache, TheBundledTokenizerCutsExactlyAfterLineEnds) {
  const auto tok = load_tokenizer(std::filesystem::path(LOCOCO_SOURCE_DIR) / "models" / "lococo-tiny");
  server_detail::PieceTokenCache cache(*tok, 1 << 20);
  ASSERT_TRUE(cache.piecewise());
  std::string book;
  for (int i = 0; book.size() < 100000; ++i)
    book += std::string(i % 4 == 0 ? "\n" : "") + "Chapter " + std::to_string(i) + ". Call me Ishmael, said he.\n";
  EXPECT_EQ(*cache.encode(book), tok->encode(book));
  EXPECT_NE(tok->encode("Call"), tok->encode_after_line_end("Call"));  // the marker a cut would have added
}

}  // namespace
}  // namespace lococo
