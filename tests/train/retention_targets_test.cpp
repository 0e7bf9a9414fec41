// Retention targets: the loss gradient equals a finite difference of the loss
// it differentiates; far-attention and loss-gradient rows have their stated
// shapes; a key bias of -inf is the key's removal.
#include <cmath>

#include <gtest/gtest.h>

#include "lococo/ops/attention.h"
#include "lococo/train/retention_targets.h"
#include "test_util.h"

namespace lococo {
namespace {

// The random tiny model in float64, so that a finite difference is exact enough.
LlamaModel double_model(uint64_t seed) {
  const LlamaModel m = testing::random_model(testing::tiny_config(), seed, 0.3);
  LlamaWeights w = m.weights();
  const auto c = m.config();
  for (auto& [name, t] : w.named(c)) *t = t->to(torch::kFloat64);
  w.lm_head = w.lm_head.to(torch::kFloat64);
  return LlamaModel(c, std::move(w));
}

TEST(RetentionTargets, LossGradientIsTheLossesSlope) {
  const LlamaModel model = double_model(5);
  const auto row = testing::random_tokens(48, model.config().vocab_size, 9);
  const int64_t chunk = 8, far = 6, horizon = 10, prefix = 48 - horizon, n = prefix - far;
  const double share = 1e-2;
  const RetentionRow r = retention_targets(model, row, chunk, RetentionTarget::LossGradient, far, horizon, share);
  ASSERT_EQ(r.n, n);
  ASSERT_EQ(r.targets.size(), static_cast<size_t>(model.config().num_layers));
  // The reading the header describes: candidates at log(share), sinks and the last `far` at 0.
  std::vector<torch::Tensor> bias;
  for (int i = 0; i < model.config().num_layers; ++i) {
    auto b = torch::zeros({model.config().num_kv_heads, prefix}, torch::kFloat64);
    b.narrow(1, kRetentionSinks, n - kRetentionSinks).fill_(std::log(share));
    bias.push_back(b);
  }
  torch::NoGradGuard no_grad;
  int checked = 0;
  for (int layer = 0; layer < model.config().num_layers; ++layer) {
    for (int64_t t : {kRetentionSinks, n / 2, n - 1}) {
      const double h = 1e-5;
      auto at = [&](double delta) {
        auto moved = bias;
        moved[layer] = moved[layer].clone();
        moved[layer][0][t] += delta;
        return far_loss(model, row, chunk, horizon, moved).item<double>();
      };
      const double slope = (at(h) - at(-h)) / (2 * h);  // dL/db
      const double target = r.targets[layer][0][t].item<double>();
      EXPECT_NEAR(target, std::max(0.0, -slope), 1e-6 + 1e-4 * std::abs(slope)) << "layer " << layer << " token " << t;
      checked += slope != 0;
    }
  }
  EXPECT_GT(checked, 0);
  for (const auto& t : r.targets) {
    EXPECT_EQ(t.sizes(), torch::IntArrayRef({model.config().num_kv_heads, n}));
    EXPECT_GE(t.min().item<double>(), 0.0);
    EXPECT_GT(t.max().item<double>(), 0.0);
  }
  EXPECT_EQ(r.keys[0].sizes(), torch::IntArrayRef({model.config().num_kv_heads, n, model.config().head_dim}));
}

TEST(RetentionTargets, FarAttentionCoversAllButTheHorizon) {
  const LlamaModel model = testing::random_model(testing::tiny_config(), 2, 0.3);
  const auto row = testing::random_tokens(40, model.config().vocab_size, 4);
  const RetentionRow r = retention_targets(model, row, 8, RetentionTarget::FarAttention, 4, 8);
  EXPECT_EQ(r.n, 32);
  for (const auto& t : r.targets) {
    EXPECT_EQ(t.size(1), 32);
    // Summed over the query heads of a KV head: at most G.
    EXPECT_LE(t.max().item<double>(), model.config().num_heads / model.config().num_kv_heads + 1e-5);
  }
  EXPECT_THROW(retention_targets(model, row, 8, RetentionTarget::LossGradient, 4, 36), std::invalid_argument);
  EXPECT_THROW(retention_targets(model, row, 8, RetentionTarget::LossGradient, 4, 8, 0.0), std::invalid_argument);
  EXPECT_THROW(parse_retention_target("max"), std::invalid_argument);
}

TEST(AttentionKeyBias, MinusInfinityRemovesTheKey) {
  auto gen = at::detail::createCPUGenerator(1);
  auto q = at::normal(0.0, 1.0, {1, 4, 3, 8}, gen), k = at::normal(0.0, 1.0, {1, 2, 6, 8}, gen),
       v = at::normal(0.0, 1.0, {1, 2, 6, 8}, gen);
  auto bias = torch::zeros({2, 6});
  bias[1][1] = -std::numeric_limits<float>::infinity();
  auto biased = attention_plain(q, k, v, {}, nullptr, bias);
  testing::expect_close(attention_plain(q, k, v, {}, nullptr, torch::zeros({2, 6})), attention_plain(q, k, v, {}, nullptr),
                        1e-6);
  // Head 0 unchanged; head 1 as if key 1 were not there (queries 1 and 2 see it otherwise).
  auto keep = torch::tensor({0, 2, 3, 4, 5});
  auto without = attention_plain(q.narrow(1, 2, 2), k.narrow(1, 1, 1).index_select(2, keep),
                                 v.narrow(1, 1, 1).index_select(2, keep), {}, nullptr);
  testing::expect_close(biased.narrow(1, 0, 2), attention_plain(q, k, v, {}, nullptr).narrow(1, 0, 2), 1e-6);
  testing::expect_close(biased.narrow(1, 2, 2), without, 1e-5);
}

}  // namespace
}  // namespace lococo
