// The bundled model (models/lococo-tiny): it loads with its compressors, its
// tokenizer round-trips each corpus, and it reproduces the perplexity its
// model card records.
#include <fstream>
#include <regex>

#include <gtest/gtest.h>

#include "lococo/compressor.h"
#include "lococo/io_util.h"
#include "lococo/model_dir.h"
#include "lococo/perplexity.h"

namespace lococo {
namespace {

const std::filesystem::path kSource = LOCOCO_SOURCE_DIR;
const std::filesystem::path kModel = kSource / "models" / "lococo-tiny";

class TinyModel : public ::testing::Test {
 protected:
  // Loaded once for the suite; a missing or broken model fails every test (never skips).
  static void SetUpTestSuite() {
    try {
      model_ = new LoadedModel(load_model_dir(kModel));
    } catch (const std::exception& e) {
      error_ = new std::string(e.what());
    }
  }
  static void TearDownTestSuite() {
    delete model_;
    delete error_;
    model_ = nullptr;
    error_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(model_, nullptr) << "the bundled model does not load: " << *error_; }
  static LoadedModel* model_;
  static std::string* error_;
};
LoadedModel* TinyModel::model_ = nullptr;
std::string* TinyModel::error_ = nullptr;

TEST_F(TinyModel, LoadsWithItsCompressors) {
  const auto& c = model_->model->config();
  EXPECT_EQ(default_model_dir(), kModel);
  for (int64_t budget : {128, 256}) {
    const auto file = bundled_compressor(kModel, budget);
    ASSERT_FALSE(file.empty()) << "no compressors/m" << budget << ".safetensors";
    CacheOptions cache;
    cache.policy = "lococo";
    cache.budget = budget;
    auto compressor = LococoCompressor::load(file, c, cache);  // throws on a mismatch
    EXPECT_EQ(compressor->options().budget, budget);
    EXPECT_EQ(compressor->options().num_layers, c.num_layers);
  }
}

// SentencePiece's default normaliser (nmt_nfkc) turns newlines into spaces and
// collapses runs of whitespace, by design; everything else must come back.
std::string collapse_whitespace(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool space = std::isspace(static_cast<unsigned char>(c));
    if (space && (out.empty() || out.back() == ' ')) continue;
    out += space ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

TEST_F(TinyModel, TokenizerRoundTripsEachCorpus) {
  for (const char* sample : {"moby-dick-sample.txt", "sotu-sample.txt", "brown-sample.txt"}) {
    const std::string text = read_text_file(kSource / "tests" / "data" / sample);
    const auto ids = model_->tokenizer->encode(text);
    EXPECT_GT(text.size(), 2 * ids.size()) << sample << ": a trained tokenizer packs several characters per token";
    EXPECT_EQ(model_->tokenizer->decode(ids), collapse_whitespace(text)) << sample;
  }
}

TEST_F(TinyModel, ReproducesTheModelCardPerplexity) {
  const std::string card = read_text_file(kModel / "MODEL_CARD.md");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(card, m, std::regex(R"(Full-cache perplexity of `([^`]+)` \(chunk (\d+)\): ([0-9.]+))")))
      << "MODEL_CARD.md has no full-cache perplexity line";
  const auto tokens = model_->tokenizer->encode(read_text_file(kSource / m[1].str()), /*add_bos=*/true);
  CacheOptions co;
  co.chunk = std::stoll(m[2].str());
  auto cache = make_cache(model_->model->config(), co);
  PerplexityOptions po;
  po.chunk = co.chunk;
  const double ppl = streaming_perplexity(*model_->model, *cache, tokens, po).perplexity();
  const double recorded = std::stod(m[3].str());
  EXPECT_NEAR(ppl, recorded, 0.05 * recorded);
  EXPECT_LT(ppl, 200) << "a trained model, far below the vocabulary size";
}

}  // namespace
}  // namespace lococo
