// Retention training: it learns (validation loss falls, the top-k agreement
// rises), refuses what cannot train, and resumes where it stopped.
#include <algorithm>
#include <fstream>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lococo/train/train_retention.h"
#include "test_util.h"

namespace lococo {
namespace {

std::vector<int32_t> random_ids(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(5, 511);
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& t : out) t = tok(rng);
  return out;
}

RetentionTrainOptions small_options(const std::filesystem::path& out) {
  RetentionTrainOptions o;
  o.cache.policy = "lococo";
  o.cache.positions = PositionMode::Cache;
  o.cache.budget = 16;
  o.cache.chunk = 32;
  o.cache.lococo.keep_rate = 1.0;
  o.cache.lococo.local_window = 4;
  o.compressor.retention_hidden = 16;
  o.out = out;
  o.length = 160;
  o.far = 16;
  o.horizon = 32;
  o.steps = 40;
  o.sequences = 2;
  o.recall_rate = 0.4;
  o.passkey_rate = 0.2;
  o.recall_passage = 24;
  o.val_rows = 3;
  o.eval_every = 39;
  o.optim.lr = 3e-3;
  o.quiet = true;
  return o;
}

std::vector<nlohmann::json> validations(const std::filesystem::path& out) {
  std::ifstream in(out.string() + ".metrics.jsonl");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);)
    if (auto j = nlohmann::json::parse(line); j.contains("val_loss")) rows.push_back(j);
  return rows;
}

// Both targets (lococo/train/retention_targets.h) are learnable.
class TrainRetentionTarget : public ::testing::TestWithParam<RetentionTarget> {};

TEST_P(TrainRetentionTarget, LearnsTheRanking) {
  testing::TempDir dir;
  LoadedModel m = testing::tokenized_tiny_model(dir / "model");
  // Weights with a larger spread than the model directory's: attention then
  // depends on content (with nearly uniform attention the targets would depend
  // on positions alone, which a token's key and value cannot tell).
  const LlamaModel model = testing::random_model(m.model->config(), 3, 0.3);
  TokenData train(random_ids(6000, 1)), val(random_ids(2000, 2));
  auto o = small_options(dir / "r.safetensors");
  o.eval_every = 1;
  o.steps = 60;
  o.optim.lr = 1e-2;
  o.target = GetParam();
  auto r = train_retention(model, *m.tokenizer, train, &val, o);
  EXPECT_EQ(r.steps_done, 60);
  auto v = validations(o.out);
  ASSERT_EQ(v.size(), 60u);
  // On random weights the loss gradient depends on content less than far
  // attention does (it is mostly which tokens sit near the loss chunk), so
  // only its loss must fall; far attention is ranked.
  if (GetParam() == RetentionTarget::LossGradient) {
    EXPECT_LT(v.back()["val_loss"].get<double>(), 0.9 * v.front()["val_loss"].get<double>());
  } else {
    EXPECT_LT(v.back()["val_loss"].get<double>(), 0.8 * v.front()["val_loss"].get<double>());
    EXPECT_GT(v.back()["val_top_k"].get<double>(), v.front()["val_top_k"].get<double>() + 0.1);
  }
  EXPECT_EQ(r.best_top_k, std::max_element(v.begin(), v.end(), [](const auto& a, const auto& b) {
                            return a["val_top_k"].template get<double>() < b["val_top_k"].template get<double>();
                          })->at("val_top_k").get<double>());
  // The file written is a compressor with learned retention that a cache can use.
  auto c = LococoCompressor::load(o.out, m.model->config(), o.cache);
  EXPECT_TRUE(c->options().learned_retention());
}

INSTANTIATE_TEST_SUITE_P(Targets, TrainRetentionTarget,
                         ::testing::Values(RetentionTarget::FarAttention, RetentionTarget::LossGradient),
                         [](const auto& info) { return info.param == RetentionTarget::FarAttention ? "FarAttention"
                                                                                                   : "LossGradient"; });

TEST(TrainRetention, TheRegressionLeavesTheSinksOutAndIgnoresOffsets) {
  CompressorOptions o;
  o.num_layers = 2;
  o.num_kv_heads = 2;
  o.head_dim = 8;
  o.budget = 16;
  o.keep_rate = 1.0;
  o.local_window = 4;
  o.retention_hidden = 6;  // 4 sinks by default
  LococoCompressor c(o, 3);
  RetentionRow row;
  row.n = 40;
  for (int i = 0; i < 2; ++i) {
    row.keys.push_back(torch::randn({2, row.n, 8}));
    row.values.push_back(torch::randn({2, row.n, 8}));
    row.targets.push_back(torch::randn({2, row.n}));
  }
  torch::NoGradGuard no_grad;
  const double loss = retention_regression_loss(c, row).item<double>();
  auto changed = row;
  for (auto& t : changed.targets) {
    t = t.clone();
    t.narrow(1, 0, 4).fill_(100);  // the sinks' targets
  }
  EXPECT_NEAR(retention_regression_loss(c, changed).item<double>(), loss, 1e-6);
  for (auto& t : changed.targets) t = t + 3;  // an offset: only the ranking matters
  EXPECT_NEAR(retention_regression_loss(c, changed).item<double>(), loss, 1e-5);
  changed.targets[0].narrow(1, 4, 1).add_(10);  // a ranked token's target does count
  EXPECT_GT(retention_regression_loss(c, changed).item<double>(), loss + 0.1);
}

// A passage of distinct tokens, text, the passage again at the end: the
// passage's tokens from its third on are copied; a trigram seen twice before
// the end is not (the copy does not need one particular token).
TEST(TrainRetention, CopiedTokensAreThePassageTheEndRepeats) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 40; ++i) ids.push_back(1000 + i);  // text, all distinct
  const int64_t p0 = static_cast<int64_t>(ids.size());
  for (int64_t i = 0; i < 8; ++i) ids.push_back(500 + i);    // the passage
  for (int64_t i = 0; i < 30; ++i) ids.push_back(2000 + i);
  for (int64_t t : {7, 8, 9}) ids.push_back(t);              // a trigram twice before the end...
  for (int64_t t : {7, 8, 9}) ids.push_back(t);
  const int64_t from = static_cast<int64_t>(ids.size());
  for (int64_t i = 0; i < 8; ++i) ids.push_back(500 + i);    // ...the passage again, then that trigram again
  for (int64_t t : {7, 8, 9}) ids.push_back(t);
  const auto row = torch::tensor(ids, torch::kInt64);
  const int64_t horizon = static_cast<int64_t>(ids.size()) - from, n = from - 2;
  const auto copied = copied_tokens(row, n, horizon);
  ASSERT_EQ(copied.size(0), n);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_EQ(copied[i].item<bool>(), i >= p0 + 2 && i < p0 + 8) << "token " << i;
}

TEST(TrainRetention, RefusesWhatCannotTrain) {
  testing::TempDir dir;
  LoadedModel m = testing::tokenized_tiny_model(dir / "model");
  TokenData train(random_ids(3000, 1));
  auto expect_refused = [&](auto change, const std::string& flag) {
    auto o = small_options(dir / "r.safetensors");
    change(o);
    try {
      train_retention(*m.model, *m.tokenizer, train, nullptr, o);
      ADD_FAILURE() << "accepted: " << flag;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  };
  expect_refused([](RetentionTrainOptions& o) { o.compressor.retention_hidden = 0; }, "--retention-hidden");
  expect_refused([](RetentionTrainOptions& o) { o.cache.positions = PositionMode::Absolute; }, "--positions");
  expect_refused([](RetentionTrainOptions& o) { o.length = 4096; }, "--length");
  expect_refused([](RetentionTrainOptions& o) { o.horizon = 140; }, "--horizon");
  expect_refused([](RetentionTrainOptions& o) { o.passkey_rate = 0.8; }, "--passkey-rate");
  expect_refused([](RetentionTrainOptions& o) { o.copy_layers = {2}; }, "--copy-layers");  // a 2-layer model
}

TEST(TrainRetention, ResumeContinuesToTheLastStep) {
  testing::TempDir dir;
  LoadedModel m = testing::tokenized_tiny_model(dir / "model");
  TokenData train(random_ids(4000, 3));
  auto o = small_options(dir / "r.safetensors");
  o.steps = 10;
  o.stop_after = 4;
  auto first = train_retention(*m.model, *m.tokenizer, train, nullptr, o);
  EXPECT_TRUE(first.interrupted);
  EXPECT_EQ(first.steps_done, 4);
  o.resume = true;
  o.stop_after = 0;
  auto second = train_retention(*m.model, *m.tokenizer, train, nullptr, o);
  EXPECT_FALSE(second.interrupted);
  EXPECT_EQ(second.steps_done, 10);
  o.far = 17;  // a resumed run keeps its configuration
  EXPECT_THROW(train_retention(*m.model, *m.tokenizer, train, nullptr, o), std::invalid_argument);
}

// --train-layers trains the named layers' retention and leaves every other
// parameter exactly as the --init file has it.
TEST(TrainRetention, TrainLayersKeepsTheOthersFromInit) {
  testing::TempDir dir;
  LoadedModel m = testing::tokenized_tiny_model(dir / "model");
  TokenData train(random_ids(4000, 5));
  auto o = small_options(dir / "first.safetensors");
  o.steps = 3;
  train_retention(*m.model, *m.tokenizer, train, nullptr, o);
  o.init = o.out;
  o.out = dir / "second.safetensors";
  o.train_layers = {1};
  o.steps = 6;
  train_retention(*m.model, *m.tokenizer, train, nullptr, o);
  auto before = LococoCompressor::load(o.init, m.model->config(), o.cache)->named_parameters();
  auto after = LococoCompressor::load(o.out, m.model->config(), o.cache)->named_parameters();
  int changed = 0;
  for (const auto& p : before) {
    const bool trained = p.key().rfind("layers.1.retention.", 0) == 0;
    const bool same = torch::equal(p.value(), after[p.key()]);
    EXPECT_EQ(same, !trained) << p.key();
    changed += !same;
  }
  EXPECT_GT(changed, 0);
  // A copy head added to a file without one: the file's parameters kept, the
  // untrained layers' heads flag nothing, the trained one learns.
  o.out = dir / "third.safetensors";
  o.compressor.retention_copy = true;
  train_retention(*m.model, *m.tokenizer, train, nullptr, o);
  auto with_head = LococoCompressor::load(o.out, m.model->config(), o.cache);
  EXPECT_TRUE(with_head->options().retention_copy);
  auto head = with_head->named_parameters();
  EXPECT_TRUE(torch::equal(head["layers.0.retention.0.weight"], before["layers.0.retention.0.weight"]));
  EXPECT_TRUE(torch::equal(head["layers.0.retention.2.bias"].narrow(0, 2, 2),
                           torch::full({2}, kCopyInitLogit)));
  EXPECT_FALSE(torch::equal(head["layers.1.retention.2.bias"].narrow(0, 2, 2), torch::full({2}, kCopyInitLogit)));
  o.copy_labels = true;  // labels go to the head or the targets, not both
  EXPECT_THROW(train_retention(*m.model, *m.tokenizer, train, nullptr, o), std::invalid_argument);
  o.copy_labels = false;
  o.compressor.retention_copy = false;
  o.init.clear();  // nothing to keep the other layers from
  EXPECT_THROW(train_retention(*m.model, *m.tokenizer, train, nullptr, o), std::invalid_argument);
  o.init = dir / "first.safetensors";
  o.train_layers = {9};
  EXPECT_THROW(train_retention(*m.model, *m.tokenizer, train, nullptr, o), std::invalid_argument);
}

}  // namespace
}  // namespace lococo
