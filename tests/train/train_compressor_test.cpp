// Compressor training: the base stays frozen, training helps on a recall task,
// resume is exact.
#include <gtest/gtest.h>

#include <fstream>

#include "kv/lococo_cache.h"
#include "lococo/kv/lococo.h"
#include "lococo/train/train_compressor.h"
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
  auto o = testing::small_compressor_options(out, /*budget=*/16, /*kernel=*/5, /*segments=*/6, /*steps=*/30);
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

namespace lococo {
namespace {

// Loss of the chunk that follows a compression, as a function of the compressor.
double chunk_loss(const LlamaModel& model, const std::shared_ptr<LococoCompressor>& compressor,
                  const CacheOptions& o, const torch::Tensor& tokens, torch::Tensor* loss_out = nullptr) {
  LococoCache cache(model.config(), o, compressor);
  const int64_t B = o.chunk;
  {
    torch::NoGradGuard g;  // fill the cache: chunks 0 and 1 (compression fires at chunk 2)
    model.forward(tokens.narrow(0, 0, B), &cache);
    model.forward(tokens.narrow(0, B, B), &cache);
  }
  auto logits = model.forward(tokens.narrow(0, 2 * B, B), &cache)[0];
  auto loss = next_token_loss(logits, tokens.narrow(0, 2 * B + 1, B));
  if (loss_out) *loss_out = loss;
  return loss.item<double>();
}

TEST(TrainCompressor, GradientsMatchFiniteDifferencesInDouble) {
  auto c = testing::tiny_config();
  ModelOptions mo;
  mo.dtype = torch::kFloat64;
  LlamaWeights w = init_weights(c, 11, mo);
  {
    torch::NoGradGuard g;
    for (auto& [n, t] : w.named(c))
      if (n.find("norm") == std::string::npos) t->normal_(0.0, 0.4);
  }
  LlamaModel model(c, w, mo);
  CacheOptions o;
  o.policy = "lococo";
  o.budget = 8;
  o.chunk = 8;
  o.buffer = 2;
  o.dtype = torch::kFloat64;
  CompressorOptions copts = CompressorOptions::from(c, o);
  copts.kernel = 3;
  auto compressor = std::make_shared<LococoCompressor>(copts, 5);
  compressor->to(torch::kFloat64);
  {
    torch::NoGradGuard g;  // lambda away from 0.5 and conv outputs away from ReLU's kink
    for (auto& p : compressor->named_parameters())
      if (p.key().find("lambda") != std::string::npos) p.value().fill_(0.3);
  }
  auto tokens = testing::random_tokens(3 * 8 + 1, c.vocab_size, 4);
  torch::Tensor loss;
  chunk_loss(model, compressor, o, tokens, &loss);
  loss.backward();
  int checked = 0;
  for (auto& p : compressor->named_parameters()) {
    if (p.key().rfind("layers.0.", 0) != 0) continue;  // layer 0 suffices; the others share the code
    auto flat = p.value().view({-1});
    auto grad = p.value().grad().view({-1});
    for (int64_t i = 0; i < std::min<int64_t>(flat.size(0), 6); ++i) {
      const double h = 1e-6;
      const double orig = flat[i].item<double>();
      torch::NoGradGuard g;
      flat[i].fill_(orig + h);
      const double up = chunk_loss(model, compressor, o, tokens);
      flat[i].fill_(orig - h);
      const double down = chunk_loss(model, compressor, o, tokens);
      flat[i].fill_(orig);
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(grad[i].item<double>(), numeric, 1e-6 + 1e-4 * std::abs(numeric)) << p.key() << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6 + 4 + 1);  // 6 conv weights, the 4 biases (m = 4), lambda of layer 0
}

}  // namespace
}  // namespace lococo
