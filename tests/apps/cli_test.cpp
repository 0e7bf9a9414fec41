// The command line as a user drives it: flags named as llama.cpp names them,
// compressors found beside GGUF files, a tuned directory that works as written,
// errors that name the file actually read.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "lococo/kv/compressor.h"
#include "lococo/kv/registry.h"
#include "test_util.h"
#include "tokenizer/tokenizer_json_fixtures.h"

namespace lococo {
namespace {

class CliCommands : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = dir_ / "m";
    testing::tokenized_tiny_model(model_);
    text_ = dir_ / "text.txt";
    std::ofstream(text_) << "Call me Ishmael. Some years ago, never mind how long precisely, having little money "
                            "in my purse, and nothing particular to interest me on shore, I thought I would sail "
                            "about a little and see the watery part of the world. It is a way I have of driving "
                            "off the spleen and regulating the circulation.\n";
  }
  // An untrained compressor for the tiny model at budget 16, saved to `file`.
  void write_compressor(const std::filesystem::path& file) {
    const LoadedModel m = load_model_dir(model_);
    CacheOptions o;
    o.budget = 16;
    std::filesystem::create_directories(file.parent_path());
    LococoCompressor(CompressorOptions::from(m.model->config(), o), 1).save(file);
  }
  testing::TempDir dir_;
  std::filesystem::path model_, text_;
};

TEST_F(CliCommands, FlagsAsLlamaCppSpellsThem) {
  std::string out;
  ASSERT_EQ(testing::run_cli("generate --help", &out), 0);
  EXPECT_NE(out.find("-t,--threads"), std::string::npos) << out;
  EXPECT_NE(out.find("--temp"), std::string::npos) << out;
  EXPECT_NE(out.find("--ignore-eos"), std::string::npos) << out;
  EXPECT_NE(out.find("-c,--budget,--ctx-size"), std::string::npos) << out;
  ASSERT_EQ(testing::run_cli(fmt::format("generate -m {} -t 1 --temp 0 -n 4 -p Hello --ignore-eos --json",
                                         model_.string()), &out), 0) << out;
  EXPECT_NE(out.find("\"generated_tokens\":4"), std::string::npos) << out;
}

TEST_F(CliCommands, GgufModelsFindTheirCompressorsBesideTheFile) {
  std::string out;
  const auto gguf = dir_ / "tiny.gguf";
  ASSERT_EQ(testing::run_cli(fmt::format("export-gguf {} {}", model_.string(), gguf.string()), &out), 0) << out;
  const std::string ppl = fmt::format("perplexity -m {} --file {} --cache lococo --budget 16 --chunk 16",
                                      gguf.string(), text_.string());
  EXPECT_NE(testing::run_cli(ppl, &out), 0);
  EXPECT_NE(out.find((dir_ / "tiny.compressors" / "m16.safetensors").string()), std::string::npos) << out;
  write_compressor(dir_ / "tiny.compressors" / "m16.safetensors");
  EXPECT_EQ(testing::run_cli(ppl, &out), 0) << out;
}

TEST_F(CliCommands, TunedDirectoryWorksAsWritten) {
  std::string out;
  const auto tuned = dir_ / "tuned";
  ASSERT_EQ(testing::run_cli(fmt::format("tune -m {} --data {} --budget 16 --chunk 16 --segments 3 --steps 2 "
                                         "--out {} --merge-lora --quiet",
                                         model_.string(), text_.string(), tuned.string()), &out), 0) << out;
  EXPECT_TRUE(std::filesystem::exists(tuned / "compressors" / "m16.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(tuned / "token-cache"));  // training leftovers live beside it
  EXPECT_TRUE(std::filesystem::exists(dir_ / "tuned.train"));
  EXPECT_EQ(testing::run_cli(fmt::format("perplexity -m {} --file {} --cache lococo --budget 16 --chunk 16",
                                         tuned.string(), text_.string()), &out), 0) << out;
}

TEST_F(CliCommands, TokenizerErrorsNameTheFileRead) {
  // A model directory whose tokenizer.json has more tokens than the config's vocabulary.
  auto c = testing::tiny_config();
  c.vocab_size = 8;
  const auto small = dir_ / "small";
  save_model_dir(small, testing::random_model(c, 1));
  std::ofstream(small / "tokenizer.json") << testing::gpt2_style().dump();
  EXPECT_EQ(tokenizer_file(small), small / "tokenizer.json");
  testing::expect_error([&] { load_model_dir(small); }, {"tokenizer.json", "vocab_size"});
}

}  // namespace
}  // namespace lococo
