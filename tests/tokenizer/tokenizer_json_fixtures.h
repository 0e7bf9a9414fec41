// Small Hugging Face tokenizer.json files written by hand (GPT-2, Llama 3 and
// Llama 2 styles), shared by the tokenizer and GGUF export tests.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lococo::testing {

using nlohmann::json;

inline json vocab_of(const std::vector<std::string>& tokens) {
  json v = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) v[tokens[i]] = i;
  return v;
}

inline json added(int id, const std::string& content) {
  return {{"id", id}, {"content", content}, {"special", true}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}};
}

// GPT-2 style: ByteLevel pre-tokenizer with its built-in regex.
inline json gpt2_style() {
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

// Llama 3 style: a Split regex (case-insensitive contractions, digits in threes),
// ByteLevel without its own regex, and ignore_merges.
inline json llama3_style() {
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

// Llama 2 style: SentencePiece-like normalizer ("▁" prepended, spaces -> "▁") and byte fallback.
inline json llama2_style() {
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

}  // namespace lococo::testing
