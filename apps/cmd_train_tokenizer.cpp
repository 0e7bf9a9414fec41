// lococo train-tokenizer: a SentencePiece model (byte fallback) from text files.
#include <filesystem>

#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"
#include "lococo/core/io_util.h"

namespace lococo::cli {
namespace {

// SentencePiece skips training lines longer than its max_sentence_length, and
// some documents (State of the Union) are one line of 100k characters: cut long
// lines after sentence ends into pieces of about `target` bytes.
void add_line(std::vector<std::string>& lines, const std::string& line, size_t target = 2000) {
  size_t start = 0;
  while (line.size() - start > target) {
    size_t cut = line.find(". ", start + target / 2);
    if (cut == std::string::npos || cut - start > 2 * target) cut = start + target;
    while (cut < line.size() && (line[cut] & 0xC0) == 0x80) ++cut;  // not inside a UTF-8 sequence
    lines.push_back(line.substr(start, cut + 1 - start));
    start = cut + 1;
  }
  if (start < line.size()) lines.push_back(line.substr(start));
}

}  // namespace

void add_train_tokenizer_command(CLI::App& root) {
  struct Flags {
    std::vector<std::string> inputs;
    std::string out;
    TokenizerTrainOptions options;
  };
  auto f = std::make_shared<Flags>();
  auto* sub = root.add_subcommand("train-tokenizer", "Train a SentencePiece tokenizer on text files or directories");
  sub->add_option("--data", f->inputs, "Text files or directories of .txt files")->required();
  sub->add_option("--out", f->out, "Output tokenizer.model")->required();
  sub->add_option("--vocab-size", f->options.vocab_size, "Vocabulary size")
      ->check(CLI::Range(int64_t{260}, int64_t{1} << 20))->capture_default_str();
  sub->add_option("--model-type", f->options.model_type, "SentencePiece algorithm")
      ->check(CLI::IsMember({"bpe", "unigram"}))->capture_default_str();
  sub->add_flag("--keep-whitespace", f->options.keep_whitespace,
                "Keep whitespace and newlines as written (identity normalisation, as Llama's tokenizer; default: "
                "NFKC with extra whitespace removed)");
  register_command(sub, [f] {
    std::vector<std::string> lines;
    auto add_file = [&](const std::filesystem::path& p) {
      std::istringstream in(read_text_file(p));
      for (std::string line; std::getline(in, line);)
        if (!line.empty()) add_line(lines, line);
    };
    for (const auto& input : f->inputs) {
      if (std::filesystem::is_directory(input)) {
        std::vector<std::filesystem::path> files;
        for (const auto& e : std::filesystem::recursive_directory_iterator(input))
          if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
        std::sort(files.begin(), files.end());
        for (const auto& p : files) add_file(p);
      } else {
        add_file(input);
      }
    }
    train_sentencepiece(lines, f->out, f->options);
    fmt::print("wrote {} (vocab {}, {} training lines)\n", f->out, f->options.vocab_size, lines.size());
    return 0;
  });
}

}  // namespace lococo::cli
