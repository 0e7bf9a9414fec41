// Hugging Face tokenizer.json BPE: small vocabularies written by hand, with the
// ids each input must give worked out by hand in the comments (pre-tokenizer
// pieces, byte mapping, merges in rank order), and decoding back to the input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "lococo/hf_tokenizer.h"
#include "test_util.h"

namespace lococo {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::TempDir;

json vocab_of(const std::vector<std::string>& tokens) {
  json v = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) v[tokens[i]] = i;
  return v;
}

json added(int id, const std::string& content) {
  return {{"id", id}, {"content", content}, {"special", true}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}};
}

// GPT-2 style: ByteLevel pre-tokenizer with its built-in regex.
json gpt2_style() {
  json j;
  j["model"] = {{"type", "BPE"},
                {"vocab", vocab_of({"!", "'", "2", "4", "I", "a", "c", "d", "f", "m", "n", "o", "t", "\xc4\xa0" /*Ġ*/,
                                    "\xc3\x83" /*Ã*/, "\xc2\xa9" /*©*/, "'m", "'t", "\xc4\xa0" "d", "\xc4\xa0" "do",
                                    "\xc4\xa0" "don", "42", "\xc4\xa0" "4", "ca", "\xc3\x83\xc2\xa9", "\xc4\xa0" "ca",
                                    "\xc4\xa0" "c"})},
                {"merges", {"c a", "\xc4\xa0 c", "\xc3\x83 \xc2\xa9", "' m", "' t", "\xc4\xa0 d", "\xc4\xa0" "d o",
                            "\xc4\xa0" "do n", "4 2", "\xc4\xa0 4", "\xc4\xa0 ca"}}};
  j["added_tokens"] = {added(27, "<|endoftext|>")};
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  return j;
}

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

// Llama 3 style: a Split regex (case-insensitive contractions, digits in threes),
// ByteLevel without its own regex, and ignore_merges.
json llama3_style() {
  json j;
  j["model"] = {{"type", "BPE"},
                {"ignore_merges", true},
                {"vocab", vocab_of({"H", "I", "'", "S", "\xc4\xa0", "1", "2", "3", "4", "5", "123", "\xc4\x8a" /*Ċ*/,
                                    "\xc4\x8a\xc4\x8a", "HI", "'S"})},
                {"merges", json::array({json::array({"'", "S"})})}};
  j["added_tokens"] = {added(15, "<|begin_of_text|>"), added(16, "<|end_of_text|>")};
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern",
          {{"Regex",
            R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  return j;
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

// Llama 2 style: SentencePiece-like normalizer ("▁" prepended, spaces -> "▁") and byte fallback.
json llama2_style() {
  const std::string m = "\xe2\x96\x81";  // ▁
  json j;
  j["model"] = {{"type", "BPE"},
                {"byte_fallback", true},
                {"unk_token", "<unk>"},
                {"vocab", vocab_of({"<unk>", "<s>", "</s>", "<0xC3>", "<0xBC>", m, "H", "i", "t", "h", "e", "r",
                                    m + "H", m + "Hi", m + m, m + "t", "th", m + "th", "er", "ere", m + "there"})},
                {"merges", {m + " H", m + "H i", "e r", "t h", "er e", m + " " + m, m + " th", m + "th ere"}}};
  j["added_tokens"] = {added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")};
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", m}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", m}}}}};
  j["pre_tokenizer"] = nullptr;
  return j;
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

}  // namespace
}  // namespace lococo
