// Compressor training: the base stays frozen, training helps on a recall task,
// resume is exact.
#include <gtest/gtest.h>

#include <fstream>

#include "lococo/kv_lococo.h"
#include "lococo/train_compressor.h"
#include "test_util.h"

namespace lococo {
namespace {

// A stream of "key value" pairs early on, then filler, then the same keys asked
// again: retrieval needs what compression kept of the early part.
std::vector<int32_t> recall_stream(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(10, 63);
  std::vector<int32_t> out;
  while (static_cast<int64_t>(out.size()) < n) {
    std::vector<std::pair<int, int>> pairs;
    for (int i = 0; i < 8; ++i) pairs.emplace_back(tok(rng), tok(rng));
    out.push_back(1);
    for (auto [k, v] : pairs) out.insert(out.end(), {2, k, v});
    for (int i = 0; i < 40; ++i) out.push_back(3 + i % 5);
    for (auto [k, v] : pairs) out.insert(out.end(), {4, k, v});
  }
  out.resize(n);
  return out;
}

CompressorTrainOptions small_options(const std::filesystem::path& out) {
  CompressorTrainOptions o;
  o.cache.policy = "lococo";
  o.cache.budget = 16;
  o.cache.chunk = 16;
  o.cache.buffer = 4;
  o.compressor.kernel = 5;
  o.out = out;
  o.segments = 6;
  o.steps = 30;
  o.optim.lr = 1e-4;
  o.memory_lr_scale = 100;
  o.optim.schedule.kind = "constant";
  o.quiet = true;
  o.val_tokens = 512;
  return o;
}

TEST(TrainCompressor, BaseWeightsStayBitIdentical) {
  testing::TempDir dir;
  auto model = testing::random_model(testing::tiny_config(), 1);
  LlamaWeights before = model.weights();
  std::vector<torch::Tensor> copies;
  for (auto& [n, t] : before.named(model.config())) copies.push_back(t->clone());
  TokenData train(recall_stream(2000, 1));
  auto o = small_options(dir / "c.safetensors");
  o.steps = 5;
  train_compressor(model, train, nullptr, o);
  auto after = const_cast<LlamaWeights&>(model.weights()).named(model.config());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(torch::equal(*after[i].second, copies[i])) << after[i].first;
    EXPECT_FALSE(after[i].second->requires_grad()) << after[i].first;
  }
  EXPECT_TRUE(std::filesystem::exists(dir / "c.safetensors"));
}

TEST(TrainCompressor, TrainingLowersValidationPerplexityOfLococo) {
  testing::TempDir dir;
  auto model = testing::random_model(testing::tiny_config(), 2, 0.5);
  TokenData train(recall_stream(4000, 2)), val(recall_stream(600, 99));
  auto o = small_options(dir / "c.safetensors");
  // The untrained compressor, as training starts from it (same seed).
  CompressorOptions copts = CompressorOptions::from(model.config(), o.cache);
  copts.kernel = o.compressor.kernel;
  auto untrained = std::make_shared<LococoCompressor>(copts, o.seed);
  torch::Tensor val_tokens = val.tokens().narrow(0, 0, o.val_tokens);
  double before = 0;
  {
    torch::NoGradGuard g;
    LococoCache cache(model.config(), o.cache, untrained);
    before = streaming_ppl(model, cache, val_tokens, o.cache.chunk);
  }
  auto r = train_compressor(model, train, &val, o);
  ASSERT_FALSE(r.validations.empty());
  EXPECT_LT(r.validations.back().lococo, before);
  auto trained = LococoCompressor::load(o.out, model.config(), o.cache);
  torch::NoGradGuard g;
  LococoCache cache(model.config(), o.cache, trained);
  EXPECT_LT(streaming_ppl(model, cache, val_tokens, o.cache.chunk), before);
}

TEST(TrainCompressor, ResumeEqualsUninterruptedRun) {
  torch::set_num_threads(1);
  testing::TempDir dir;
  auto model = testing::random_model(testing::tiny_config(), 3);
  TokenData train(recall_stream(3000, 3));
  auto read_losses = [](const std::filesystem::path& p) {
    std::vector<double> l;
    std::ifstream in(p);
    for (std::string line; std::getline(in, line);) l.push_back(nlohmann::json::parse(line).at("loss"));
    return l;
  };
  auto full = small_options(dir / "full.safetensors");
  full.steps = 12;
  train_compressor(model, train, nullptr, full);
  auto split = small_options(dir / "split.safetensors");
  split.steps = 12;
  split.stop_after = 4;
  EXPECT_TRUE(train_compressor(model, train, nullptr, split).interrupted);
  split.stop_after = 0;
  split.resume = true;
  EXPECT_FALSE(train_compressor(model, train, nullptr, split).interrupted);
  auto a = read_losses(dir / "full.safetensors.metrics.jsonl");
  auto b = read_losses(dir / "split.safetensors.metrics.jsonl");
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(b.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5) << "step " << i + 1;
}

}  // namespace
}  // namespace lococo
