// Sampling and the generation loop.
#include <gtest/gtest.h>

#include "lococo/generate/generate.h"
#include "lococo/model/model_dir.h"
#include "lococo/generate/sampler.h"
#include "test_util.h"

namespace lococo {
namespace {

// logits for 6 tokens: probabilities (softmax) in the order 3 > 1 > 4 > 0 > 5 > 2.
torch::Tensor fixed_logits() { return torch::tensor({1.0f, 3.0f, -2.0f, 4.0f, 2.0f, 0.0f}); }

std::vector<int64_t> kept(const torch::Tensor& probs) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < probs.size(0); ++i)
    if (probs[i].item<float>() > 0) out.push_back(i);
  return out;
}

TEST(Sampler, TopKKeepsExactlyTheKMostLikely) {
  Sampler s({1.0, 3, 1.0, 0});
  auto p = s.candidate_probs(fixed_logits());
  EXPECT_EQ(kept(p), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_NEAR(p.sum().item<float>(), 1.0, 1e-6);
  // Renormalised softmax over the three.
  auto ref = torch::softmax(torch::tensor({3.0f, 4.0f, 2.0f}), 0);
  EXPECT_NEAR(p[3].item<float>(), ref[1].item<float>(), 1e-6);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  auto full = torch::softmax(fixed_logits(), 0);
  const float p3 = full[3].item<float>(), p1 = full[1].item<float>(), p4 = full[4].item<float>();
  // Just above p3 + p1: needs a third token.
  Sampler s({1.0, 0, p3 + p1 + 1e-4, 0});
  EXPECT_EQ(kept(s.candidate_probs(fixed_logits())), (std::vector<int64_t>{1, 3, 4}));
  // Just below p3 + p1: two tokens suffice.
  Sampler s2({1.0, 0, p3 + p1 - 1e-4, 0});
  EXPECT_EQ(kept(s2.candidate_probs(fixed_logits())), (std::vector<int64_t>{1, 3}));
  // Below p3: the top token alone.
  Sampler s3({1.0, 0, p3 * 0.5, 0});
  EXPECT_EQ(kept(s3.candidate_probs(fixed_logits())), (std::vector<int64_t>{3}));
  (void)p4;
}

TEST(Sampler, GreedyPicksArgmaxAndSeedReproduces) {
  Sampler greedy({0.0, 0, 1.0, 0});
  EXPECT_EQ(greedy.sample(fixed_logits()), 3);
  auto draw = [](uint64_t seed) {
    Sampler s({1.0, 0, 1.0, seed});
    std::vector<int64_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(s.sample(fixed_logits()));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
  // Sampling follows the distribution: token 3 is the most frequent.
  auto many = draw(7);
  EXPECT_GT(std::count(many.begin(), many.end(), 3), std::count(many.begin(), many.end(), 2));
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(Sampler({-1.0, 0, 1.0, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({1.0, 0, 0.0, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({1.0, -2, 1.0, 0}), std::invalid_argument);
}

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override { m_ = testing::tokenized_tiny_model(dir_.path()); }
  GenerateResult run(const GenerateOptions& o, std::string* streamed = nullptr) {
    auto cache = make_cache(m_.model->config(), CacheOptions{});
    return generate(*m_.model, *m_.tokenizer, *cache, m_.tokenizer->encode("The pass key is"), o,
                    [&](const std::string& s) {
                      if (streamed) *streamed += s;
                      return true;
                    });
  }
  testing::TempDir dir_;
  LoadedModel m_;
};

TEST_F(GenerateTest, GreedyIsDeterministicAndStreamsTheSameText) {
  GenerateOptions o;
  o.max_tokens = 12;
  o.stop_at_eos = false;
  std::string streamed;
  auto a = run(o, &streamed);
  auto b = run(o);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.tokens.size(), 12u);
  EXPECT_EQ(streamed, a.text);
  EXPECT_EQ(a.finish_reason, "length");
}

TEST_F(GenerateTest, StopsAtAStopStringWithoutEmittingIt) {
  GenerateOptions o;
  o.max_tokens = 12;
  o.stop_at_eos = false;
  auto full = run(o);
  ASSERT_GE(full.text.size(), 4u);
  // Use a piece of the greedy continuation as the stop string.
  const std::string stop = full.text.substr(full.text.size() / 2, 2);
  o.stop = {stop};
  std::string streamed;
  auto r = run(o, &streamed);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_EQ(streamed, r.text);
}

TEST_F(GenerateTest, DecodeMatchesRecomputingFromScratch) {
  // The token chosen at each step equals the argmax of a fresh no-cache forward.
  GenerateOptions o;
  o.max_tokens = 6;
  o.stop_at_eos = false;
  auto r = run(o);
  auto seq = m_.tokenizer->encode("The pass key is", true);
  torch::NoGradGuard g;
  for (int64_t id : r.tokens) {
    auto logits = m_.model->forward(torch::tensor(seq, torch::kInt64), nullptr)[0];
    EXPECT_EQ(logits[-1].argmax().item<int64_t>(), id);
    seq.push_back(id);
  }
}

}  // namespace
}  // namespace lococo
