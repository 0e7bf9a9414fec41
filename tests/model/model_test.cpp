// The decoder: chunking invariance, GQA vs repeated MHA, RoPE, a hand-computed forward.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "lococo/kv/cache.h"
#include "lococo/model/model.h"
#include "lococo/ops/rope.h"
#include "test_util.h"

namespace lococo {
namespace {

using testing::expect_close;
using testing::random_model;
using testing::random_tokens;
using testing::tiny_config;

// Logits of `tokens` fed through a full cache in chunks of `chunk`: [N, V].
torch::Tensor chunked_logits(const LlamaModel& m, const torch::Tensor& tokens, int64_t chunk) {
  torch::NoGradGuard g;
  CacheOptions o;
  o.chunk = chunk;
  auto cache = make_cache(m.config(), o);
  std::vector<torch::Tensor> parts;
  for (int64_t s = 0; s < tokens.size(0); s += chunk)
    parts.push_back(m.forward(tokens.narrow(0, s, std::min(chunk, tokens.size(0) - s)), cache.get())[0]);
  return torch::cat(parts, 0);
}

TEST(Model, ChunkingDoesNotChangeLogits) {
  auto m = random_model(tiny_config());
  auto tokens = random_tokens(150, m.config().vocab_size);
  torch::NoGradGuard g;
  auto one_pass = m.forward(tokens, nullptr)[0];  // [N, V], no cache at all
  for (int64_t chunk : {150, 1, 7, 64}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    expect_close(chunked_logits(m, tokens, chunk), one_pass, 1e-4);
  }
}

TEST(Model, GqaEqualsMhaWithRepeatedKvHeads) {
  ModelConfig gqa = tiny_config(4, 2);
  auto m = random_model(gqa, 3);
  // Repeat each KV head's rows of k_proj / v_proj G times (HF repeat_kv order).
  ModelConfig mha = gqa;
  mha.num_kv_heads = gqa.num_heads;
  LlamaWeights w = m.weights();
  const int64_t G = gqa.group_size(), d = gqa.head_dim;
  for (auto& l : w.layers)
    for (Linear* lin : {&l.k, &l.v}) {
      auto heads = lin->weight.view({gqa.num_kv_heads, d, gqa.hidden_size});
      lin->weight = heads.repeat_interleave(G, 0).reshape({mha.kv_dim(), gqa.hidden_size}).clone();
    }
  LlamaModel m2(mha, w);
  auto tokens = random_tokens(40, gqa.vocab_size, 5);
  torch::NoGradGuard g;
  expect_close(m2.forward(tokens, nullptr), m.forward(tokens, nullptr), 1e-5);
  expect_close(chunked_logits(m2, tokens, 7), chunked_logits(m, tokens, 7), 1e-5);
}

TEST(Rope, MatchesClosedFormRotation) {
  const int64_t d = 8;
  auto x = torch::randn({3, 5, d}, torch::kFloat64);  // [H, T, d]
  RopeParams p{10000.0, {}};
  auto out = apply_rope(x, 11, p);
  for (int64_t t = 0; t < 5; ++t)
    for (int64_t i = 0; i < d / 2; ++i) {
      const double angle = (11 + t) * std::pow(10000.0, -2.0 * i / d);
      for (int64_t h = 0; h < 3; ++h) {
        const double a = x[h][t][i].item<double>(), b = x[h][t][i + d / 2].item<double>();
        EXPECT_NEAR(out[h][t][i].item<double>(), a * std::cos(angle) - b * std::sin(angle), 1e-9);
        EXPECT_NEAR(out[h][t][i + d / 2].item<double>(), b * std::cos(angle) + a * std::sin(angle), 1e-9);
      }
    }
}

TEST(Rope, LinearScalingDividesPositions) {
  auto x = torch::randn({2, 4, 16}, torch::kFloat64);
  RopeScaling linear;
  linear.type = "linear";
  linear.factor = 4.0;
  auto scaled = apply_rope(x, torch::tensor({0, 4, 8, 12}), RopeParams{10000.0, linear});
  auto plain = apply_rope(x, torch::tensor({0, 1, 2, 3}), RopeParams{10000.0, {}});
  expect_close(scaled, plain, 1e-12);
}

// Llama 3.1's settings (theta 5e5, d 128, factor 8, low 1, high 4, context 8192).
// Reference values from the published formula, evaluated separately in double:
// i = 0 (wavelength 2 pi) is kept, i = 63 (wavelength 2.6M) divided by 8, and
// i = 30 (wavelength 2948, between 8192/4 and 8192) blended.
TEST(Rope, Llama3ScalingPerFrequency) {
  ModelConfig c = testing::tiny_config();
  c.rope_theta = 500000.0;
  nlohmann::json j = c.to_json();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  const ModelConfig parsed = ModelConfig::from_json(j, "config.json");
  EXPECT_EQ(parsed.to_json()["rope_scaling"], j["rope_scaling"]);  // round trip
  const auto f = RopeParams::from(parsed).inv_freq(128);
  ASSERT_EQ(f.size(), 64u);
  EXPECT_DOUBLE_EQ(f[0], 1.0);
  EXPECT_NEAR(f[30], 0.0013718935677611381, 1e-15);
  EXPECT_NEAR(f[63], 3.068925988914511e-07, 1e-20);
  for (size_t i = 1; i < f.size(); ++i) EXPECT_LT(f[i], f[i - 1]) << i;  // still decreasing: no band overlaps
  j["rope_scaling"]["high_freq_factor"] = 0.5;
  EXPECT_THROW(ModelConfig::from_json(j, "config.json"), std::runtime_error);
}

// One layer, hidden 4, one head of dim 4, MLP width 2, vocab 3: everything
// computed step by step with plain loops.
TEST(Model, HandComputedOneLayerForward) {
  ModelConfig c;
  c.vocab_size = 3;
  c.hidden_size = 4;
  c.intermediate_size = 2;
  c.num_layers = 1;
  c.num_heads = 1;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 100.0;
  auto m = random_model(c, 9, 0.5);
  const auto& w = m.weights();
  const auto& L = w.layers[0];
  auto tok = torch::tensor({2, 0}, torch::kInt64);
  torch::NoGradGuard g;
  auto logits = m.forward(tok, nullptr)[0];  // [2, 3]

  using Vec = std::vector<double>;
  auto row = [](const torch::Tensor& t, int64_t r) {
    Vec v(t.size(1));
    for (int64_t j = 0; j < t.size(1); ++j) v[j] = t[r][j].item<double>();
    return v;
  };
  auto matvec = [](const torch::Tensor& W, const Vec& x) {  // W [out, in]
    Vec y(W.size(0), 0.0);
    for (int64_t i = 0; i < W.size(0); ++i)
      for (int64_t j = 0; j < W.size(1); ++j) y[i] += W[i][j].item<double>() * x[j];
    return y;
  };
  auto rmsnorm = [&](const Vec& x, const torch::Tensor& g) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / x.size() + c.rms_norm_eps);
    Vec y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * g[i].item<double>();
    return y;
  };
  auto rope = [&](Vec x, int64_t pos) {
    Vec y(4);
    for (int i = 0; i < 2; ++i) {
      const double a = pos * std::pow(100.0, -2.0 * i / 4);
      y[i] = x[i] * std::cos(a) - x[i + 2] * std::sin(a);
      y[i + 2] = x[i + 2] * std::cos(a) + x[i] * std::sin(a);
    }
    return y;
  };
  std::vector<Vec> xs = {row(w.embed, 2), row(w.embed, 0)}, qs, ks, vs;
  for (int t = 0; t < 2; ++t) {
    Vec h = rmsnorm(xs[t], L.attn_norm);
    qs.push_back(rope(matvec(L.q.weight, h), t));
    ks.push_back(rope(matvec(L.k.weight, h), t));
    vs.push_back(matvec(L.v.weight, h));
  }
  for (int t = 0; t < 2; ++t) {
    // Causal softmax attention over keys 0..t.
    Vec scores;
    double mx = -1e300;
    for (int j = 0; j <= t; ++j) {
      double s = 0;
      for (int i = 0; i < 4; ++i) s += qs[t][i] * ks[j][i];
      scores.push_back(s / 2.0);
      mx = std::max(mx, s / 2.0);
    }
    double z = 0;
    for (double& s : scores) z += (s = std::exp(s - mx));
    Vec att(4, 0.0);
    for (int j = 0; j <= t; ++j)
      for (int i = 0; i < 4; ++i) att[i] += scores[j] / z * vs[j][i];
    Vec o = matvec(L.o.weight, att), x(4);
    for (int i = 0; i < 4; ++i) x[i] = xs[t][i] + o[i];
    Vec h = rmsnorm(x, L.mlp_norm);
    Vec gate = matvec(L.gate.weight, h), up = matvec(L.up.weight, h), act(2);
    for (int i = 0; i < 2; ++i) act[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
    Vec down = matvec(L.down.weight, act);
    for (int i = 0; i < 4; ++i) x[i] += down[i];
    Vec logit = matvec(w.lm_head, rmsnorm(x, w.final_norm));
    for (int v = 0; v < 3; ++v) EXPECT_NEAR(logits[t][v].item<double>(), logit[v], 1e-4) << "t=" << t << " v=" << v;
  }
}

TEST(Model, RejectsTokensOutsideVocabulary) {
  auto m = random_model(tiny_config());
  EXPECT_THROW(m.forward(torch::tensor({1, 64}, torch::kInt64), nullptr), std::invalid_argument);
  EXPECT_THROW(m.forward(torch::tensor({-1}, torch::kInt64), nullptr), std::invalid_argument);
}

TEST(Model, FullCacheGrowsWithoutLosingTokens) {
  auto m = random_model(tiny_config());
  CacheOptions o;
  o.chunk = 4;
  auto cache = make_cache(m.config(), o);
  torch::NoGradGuard g;
  auto tokens = random_tokens(50, 64);
  for (int64_t s = 0; s < 50; s += 5) m.forward(tokens.narrow(0, s, 5), cache.get());
  EXPECT_EQ(cache->slots(0), 50);
  EXPECT_GE(cache->capacity(0), 50);
  EXPECT_EQ(cache->tokens_seen(), 50);
}

}  // namespace
}  // namespace lococo

namespace lococo {
namespace {

TEST(Project, SingleRowKernelEqualsLinear) {
  auto gen = at::detail::createCPUGenerator(11);
  auto w = at::normal(0.0, 1.0, {96, 80}, gen);
  for (auto shape : std::vector<std::vector<int64_t>>{{80}, {1, 80}, {1, 1, 80}, {3, 80}}) {
    auto x = at::normal(0.0, 1.0, shape, gen);
    auto y = project(x, w);
    auto ref = torch::linear(x.to(torch::kFloat64), w.to(torch::kFloat64));
    ASSERT_EQ(y.sizes(), ref.sizes());
    EXPECT_TRUE(torch::allclose(y.to(torch::kFloat64), ref, 1e-5, 1e-5));
  }
}

TEST(Model, DecodeStepEqualsRecomputation) {
  // Token-by-token decoding (single-row kernels) gives the logits of one full pass.
  const auto model = testing::random_model(testing::tiny_config(), 5);
  auto tokens = testing::random_tokens(20, 64, 6);
  auto full = model.forward(tokens, nullptr)[0];  // [20, V]
  auto cache = make_cache(model.config(), CacheOptions{});
  for (int64_t i = 0; i < 20; ++i) {
    auto step = model.forward(tokens.narrow(0, i, 1), cache.get())[0][0];  // [V]
    EXPECT_TRUE(torch::allclose(step, full[i], 1e-5, 1e-4)) << "token " << i;
  }
}

}  // namespace
}  // namespace lococo
