// Hugging Face tokenizer.json BPE: small vocabularies written by hand, with the
// ids each input must give worked out by hand in the comments (pre-tokenizer
// pieces, byte mapping, merges in rank order), and decoding back to the input.
#include <algorithm>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "lococo/tokenizer/tokenizer_json.h"
#include "tokenizer/tokenizer_json_fixtures.h"
#include "test_util.h"

namespace lococo {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::TempDir;
using testing::gpt2_style;
using testing::llama2_style;
using testing::llama3_style;

TEST(HfTokenizer, Gpt2ByteLevelBpe) {
  HfBpeTokenizer tok(gpt2_style(), "gpt2.json");
  const std::string text = "I'm  don't 42 caf\xc3\xa9!<|endoftext|>";
  // Pieces: "I" "'m" " " " don" "'t" " 42" " café" "!" then the added token; " " is Ġ and
  // é's bytes C3 A9 are "Ã©". " 42": "4 2" (rank 8) beats "Ġ 4" (rank 9) -> Ġ, 42.
  // " café": ca (0), then Ã© (2), then Ġ ca (10) -> Ġca, f, Ã©.
  const std::vector<int64_t> want = {4, 16, 13, 20, 17, 13, 21, 25, 8, 24, 0, 27};
  EXPECT_EQ(tok.encode(text), want);
  EXPECT_EQ(tok.decode(want), text);
  EXPECT_EQ(tok.eos_id(), 27);
  EXPECT_EQ(tok.piece_text(13), " ");
  EXPECT_TRUE(tok.byte_level());
}

TEST(HfTokenizer, Llama3SplitRegexAndIgnoreMerges) {
  HfBpeTokenizer tok(llama3_style(), "llama3.json");
  const std::string text = "HI'S 12345\n\n";
  // Pieces: "HI" "'S" " " "123" "45" "\n\n". ignore_merges takes HI, 'S, 123 and ĊĊ
  // whole; "45" is not in the vocabulary and has no merge: 4, 5.
  const std::vector<int64_t> want = {13, 14, 4, 10, 8, 9, 12};
  EXPECT_EQ(tok.encode(text), want);
  EXPECT_EQ(tok.decode(want), text);
  std::vector<int64_t> with_bos = {15};
  with_bos.insert(with_bos.end(), want.begin(), want.end());
  EXPECT_EQ(tok.encode(text, /*add_bos=*/true), with_bos);
  EXPECT_EQ(tok.decode(with_bos), text);  // BOS is not text
  EXPECT_EQ(tok.eos_id(), 16);
  json without = llama3_style();
  without["model"]["ignore_merges"] = false;
  EXPECT_EQ(HfBpeTokenizer(without, "x.json").encode("HI"), (std::vector<int64_t>{0, 1}));  // no "H I" merge
}

TEST(HfTokenizer, Llama2SentencePieceStyleWithByteFallback) {
  HfBpeTokenizer tok(llama2_style(), "llama2.json");
  const std::string text = "Hi  there \xc3\xbc";  // "Hi  there ü"
  // "▁Hi▁▁there▁ü" in words "▁Hi" "▁▁there" "▁ü". "▁▁there" by rank: er (2), th (3),
  // ere (4), ▁▁ (5); "▁ th" (6) no longer applies -> ▁▁, th, ere. ü = bytes C3 BC.
  const std::vector<int64_t> want = {13, 14, 16, 19, 5, 3, 4};
  EXPECT_EQ(tok.encode(text), want);
  EXPECT_EQ(tok.decode(want), text);
  EXPECT_EQ(tok.encode("Hi</s>", true), (std::vector<int64_t>{1, 13, 2}));
  EXPECT_EQ(tok.decode({1, 13, 2}), "Hi</s>");
  EXPECT_EQ(tok.piece_text(13), " Hi");  // a stream continuation keeps its space
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_FALSE(tok.byte_level());
}

TEST(HfTokenizer, NfcNormalizerComposesBeforeSplitting) {
  // "e" + U+0301 (combining acute) is "é" (U+00E9) in NFC: the same ids as the
  // composed text, bytes C3 A9 -> "Ã©" (24). Without the normalizer the lone
  // "e" is looked up, and this small vocabulary has none.
  json j = gpt2_style();
  j["normalizer"] = {{"type", "NFC"}};
  HfBpeTokenizer nfc(j, "nfc.json");
  const std::string composed = "caf\xc3\xa9", decomposed = "cafe\xcc\x81";
  EXPECT_EQ(nfc.encode(decomposed), nfc.encode(composed));
  EXPECT_EQ(nfc.encode(composed), (std::vector<int64_t>{23, 8, 24}));
  EXPECT_EQ(nfc.decode(nfc.encode(decomposed)), composed);
  HfBpeTokenizer plain(gpt2_style(), "plain.json");
  expect_error([&] { plain.encode(decomposed); }, {"plain.json", "'e' is not in the vocabulary"});  // left decomposed
}

TEST(HfTokenizer, ModelDirectoryWithOnlyTokenizerJsonLoadsIt) {
  TempDir dir;
  testing::write_bytes(dir / "tokenizer.json", llama2_style().dump());
  auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->encode("Hi"), (std::vector<int64_t>{13}));
}

TEST(HfTokenizer, UnsupportedOrBrokenFilesNameTheField) {
  json j = gpt2_style();
  j["model"]["type"] = "WordPiece";
  expect_error([&] { HfBpeTokenizer(j, "t.json"); }, {"t.json", "model.type 'WordPiece'"});
  j = gpt2_style();
  j["model"]["merges"][3] = "nospace";
  expect_error([&] { HfBpeTokenizer(j, "t.json"); }, {"t.json", "model.merges[3]"});
  j = gpt2_style();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error([&] { HfBpeTokenizer(j, "t.json"); }, {"t.json", "pre_tokenizer 'Whitespace'"});
  j = llama3_style();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  expect_error([&] { HfBpeTokenizer(j, "t.json"); }, {"t.json", "regex"});
  TempDir dir;
  testing::write_bytes(dir / "tokenizer.json", "{\"model\": ");
  expect_error([&] { HfBpeTokenizer::load(dir / "tokenizer.json"); }, {"tokenizer.json", "invalid JSON"});
}

// Long texts tokenise in time linear in their length: 2 MiB of words through
// the pre-tokenizer regex (its UTF-8 was re-checked to the end on every match,
// quadratic: minutes for this); and a 20,000-letter word, merged by the heap
// of pairs as the rank order asks.
TEST(HfTokenizer, LongTextsAndLongWordsTokeniseInLinearTime) {
  HfBpeTokenizer tok(gpt2_style(), "gpt2.json");
  std::string text = "ca";
  for (int i = 0; i < (1 << 20) - 1; ++i) text += " ca";
  const auto ids = tok.encode(text);
  ASSERT_EQ(ids.size(), size_t{1} << 20);
  EXPECT_EQ(ids[0], 23);  // "ca"
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 25), (1 << 20) - 1);  // "Ġca"

  // Letters a..z then z..a, repeated: a word of 20,000 letters. The merges
  // join "a b" -> "ab", then "ab c" -> "abc", ...: every a..z run becomes one
  // token and every z..a letter stays alone (27 tokens per 52 letters).
  json j = gpt2_style();
  std::vector<std::string> vocab, merges;
  std::string chain;
  for (char c = 'a'; c <= 'z'; ++c) {
    vocab.push_back(std::string(1, c));
    if (!chain.empty()) merges.push_back(chain + " " + std::string(1, c));
    chain += c;
    if (chain.size() > 1) vocab.push_back(chain);
  }
  j["model"]["vocab"] = testing::vocab_of(vocab);
  j["model"]["merges"] = merges;
  j["added_tokens"] = json::array();
  const HfBpeTokenizer chained(j, "chain.json");
  std::string word;
  for (int i = 0; word.size() < 20000; ++i) word += static_cast<char>(i % 52 < 26 ? 'a' + i % 26 : 'z' - i % 26);
  const auto got = chained.encode(word);
  ASSERT_EQ(got.size(), 20000 / 52 * 27 + 1 + (20000 % 52 - 26));
  EXPECT_EQ(chained.decode({got[0]}), chain);
  EXPECT_TRUE(chained.decode(got) == word);  // (not EXPECT_EQ: 20,000 letters in a failure message)
}

// Text that is not UTF-8 is an error naming the byte, not one silent piece.
TEST(HfTokenizer, InvalidUtf8IsAnErrorNamingTheByte) {
  HfBpeTokenizer tok(gpt2_style(), "gpt2.json");
  expect_error([&] { tok.encode("ca ca\xff ca"); }, {"not valid UTF-8", "byte 5"});
}

}  // namespace
}  // namespace lococo
