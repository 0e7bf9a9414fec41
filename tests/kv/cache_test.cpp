// The KV-cache policies: memory bounds, equivalence with the full cache when
// nothing needs evicting, and what each policy keeps (docs/DESIGN.md sections 3-5).
#include <algorithm>
#include <map>
#include <numeric>
#include <stdexcept>

#include <gtest/gtest.h>

#include "kv/kv_test_support.h"
#include "lococo/kv/compressor.h"
#include "kv/lococo_cache.h"
#include "lococo/kv/lococo.h"

namespace lococo {
namespace {

using testing::bounded_options;
using testing::bounded_policies;
using testing::feed_chunk;
using testing::positions_of;
using testing::random_tokens;
using testing::tiny_config;
using testing::tiny_model;

SlotCache& slot_cache(KvCache& c) { return dynamic_cast<SlotCache&>(c); }

// Expects `what` to throw std::invalid_argument whose message names `flag`.
template <typename F>
void expect_invalid(F&& what, const std::string& flag) {
  try {
    what();
    ADD_FAILURE() << "no exception; expected one naming " << flag;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
  }
}

// Indices 0..n-1 of `scores` ordered best first (ties: earlier first).
std::vector<int64_t> ranked(const std::vector<float>& scores) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  return order;
}

std::vector<int64_t> sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// ---------------------------------------------------------------------------
// Memory bounds

TEST(KvPolicies, BoundedSlotsNeverExceedBudgetBufferChunkOver5000Tokens) {
  auto model = tiny_model();
  const int64_t M = 48, b = 8, B = 40, n = 5000;
  auto tokens = random_tokens(n, 11);
  const std::vector<int64_t> sizes = {40, 1, 17, 40, 3, 1, 1, 29};  // prefill-sized and decode-sized chunks
  for (const auto& policy : bounded_policies()) {
    SCOPED_TRACE(policy);
    auto cache = make_cache(model->config(), bounded_options(policy, M, b, B));
    const int64_t bytes = cache->bytes();
    int64_t at = 0, step = 0, compressed = 0, last = 0;
    torch::NoGradGuard no_grad;
    while (at < n) {
      const int64_t len = std::min(sizes[step++ % sizes.size()], n - at);
      model->forward(tokens.narrow(0, at, len), cache.get());
      at += len;
      for (int i = 0; i < model->config().num_layers; ++i) {
        ASSERT_LE(cache->slots(i), M + b + B) << "after " << at << " tokens";
        ASSERT_EQ(cache->capacity(i), M + b + B) << "the buffers grew";
      }
      if (cache->slots(0) < last) ++compressed;
      last = cache->slots(0);
    }
    EXPECT_EQ(cache->bytes(), bytes);
    EXPECT_EQ(cache->tokens_seen(), n);
    EXPECT_GT(compressed, 50);
  }
}

TEST(KvPolicies, CompressionIsLazyAndLeavesExactlyBudget) {
  auto model = tiny_model();
  const int64_t M = 32, b = 4, B = 32;
  auto tokens = random_tokens(5 * B, 12);
  for (const auto& policy : bounded_policies()) {
    SCOPED_TRACE(policy);
    auto cache = make_cache(model->config(), bounded_options(policy, M, b, B));
    std::vector<int64_t> slots;
    testing::stream(*model, *cache, tokens, B, [&](const torch::Tensor&) { slots.push_back(cache->slots(1)); });
    // With B = M the first compression happens at the third chunk: 32, 64, 32 + 32, ...
    EXPECT_EQ(slots, (std::vector<int64_t>{32, 64, 64, 64, 64}));
  }
  // A first chunk longer than M + b + B is stored whole, then compressed to M.
  auto cache = make_cache(model->config(), bounded_options("h2o", M, b, B));
  torch::NoGradGuard no_grad;
  model->forward(random_tokens(100, 13), cache.get());
  EXPECT_EQ(cache->slots(0), 100);
  model->forward(random_tokens(5, 14), cache.get());
  EXPECT_EQ(cache->slots(0), M + 5);
}

// ---------------------------------------------------------------------------
// Equivalence with the full cache

TEST(KvPolicies, BudgetAtLeastInputGivesExactlyTheFullCacheLogits) {
  auto model = tiny_model(3, 4.0);
  const int64_t n = 150, B = 32;
  auto tokens = random_tokens(n, 21);
  for (auto positions : {PositionMode::Absolute, PositionMode::Cache}) {
    CacheOptions full = bounded_options("full", n, 16, B);
    full.positions = positions;
    auto reference = make_cache(model->config(), full);
    std::vector<torch::Tensor> expected;
    testing::stream(*model, *reference, tokens, B, [&](const torch::Tensor& l) { expected.push_back(l); });
    for (const auto& policy : cache_policy_names()) {
      SCOPED_TRACE(policy + " / " + to_string(positions));
      CacheOptions o = full;
      o.policy = policy;
      auto cache = make_cache(model->config(), o);
      size_t k = 0;
      testing::stream(*model, *cache, tokens, B, [&](const torch::Tensor& l) {
        EXPECT_TRUE(torch::equal(l, expected[k])) << "chunk " << k;
        ++k;
      });
    }
  }
}

// ---------------------------------------------------------------------------
// What each policy keeps (synthetic chunks whose rows encode their token index)

TEST(Streaming, KeepsExactlyTheSinksAndTheMostRecentTokens) {
  const ModelConfig c = tiny_config();
  const int64_t M = 20, b = 3, sinks = 4;
  auto cache = make_cache(c, bounded_options("streaming", M, b, 16));
  const std::vector<int64_t> sizes = {16, 1, 5, 9, 1, 1, 16, 2};
  for (int step = 0; step < 60; ++step) {
    feed_chunk(*cache, c, sizes[step % sizes.size()], {});
    const int64_t seen = cache->tokens_seen(), len = cache->slots(0);
    std::vector<int64_t> expected;
    for (int64_t t = 0; t < std::min(seen, sinks); ++t) expected.push_back(t);
    for (int64_t t = std::max(seen - (len - sinks), sinks); t < seen; ++t) expected.push_back(t);
    for (int i = 0; i < c.num_layers; ++i) {
      auto pos = positions_of(slot_cache(*cache), i);
      auto values = slot_cache(*cache).stored(i).values;  // [Hkv, len, d]
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        ASSERT_EQ(pos[h], expected) << "after " << seen << " tokens";
        for (int64_t j = 0; j < len; ++j)  // the rows moved with their tokens
          ASSERT_EQ(values[h][j][0].item<float>(), expected[j] + 1000 * h);
      }
    }
  }
}

TEST(H2o, KeepsTheHighestAccumulatedScoresPlusTheRecentWindow) {
  const ModelConfig c = tiny_config();
  const int64_t M = 16, b = 4, B = 8, recent = 6;
  CacheOptions o = bounded_options("h2o", M, b, B);
  o.h2o.recent = recent;
  auto cache = make_cache(c, o);
  auto& slots = slot_cache(*cache);
  auto gen = at::detail::createCPUGenerator(5);
  // Independent bookkeeping: accumulated score of every token, per layer and head.
  std::map<std::tuple<int, int64_t, int64_t>, float> acc;
  auto stats = [&](int i, int64_t S, int64_t) {
    AttentionStats s;
    s.column_sums = torch::rand({c.num_kv_heads, S}, gen);  // [Hkv, S]
    auto pos = positions_of(slots, i);
    for (int64_t h = 0; h < c.num_kv_heads; ++h)
      for (int64_t j = 0; j < S; ++j) acc[{i, h, pos[h][j]}] += s.column_sums[h][j].item<float>();
    return s;
  };
  int compressions = 0;
  for (int step = 0; step < 30; ++step) {
    const int64_t n = step % 3 == 2 ? 1 : B;
    std::vector<std::vector<std::vector<int64_t>>> expected(c.num_layers);
    const bool due = cache->slots(0) > M + b;
    for (int i = 0; i < c.num_layers && due; ++i) {
      auto pos = positions_of(slots, i);
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        const int64_t L = pos[h].size();
        std::vector<float> score;
        for (int64_t j = 0; j < L - recent; ++j) score.push_back(acc[{i, h, pos[h][j]}]);
        auto best = ranked(score);
        std::vector<int64_t> keep;
        for (int64_t r = 0; r < M - recent; ++r) keep.push_back(pos[h][best[r]]);
        for (int64_t j = L - recent; j < L; ++j) keep.push_back(pos[h][j]);
        expected[i].push_back(sorted(keep));
      }
    }
    feed_chunk(*cache, c, n, stats);
    if (!due) continue;
    ++compressions;
    for (int i = 0; i < c.num_layers; ++i) {
      auto pos = positions_of(slots, i);
      auto scores = slots.stored_scores(i);
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        ASSERT_EQ(std::vector<int64_t>(pos[h].begin(), pos[h].begin() + M), expected[i][h]) << "step " << step;
        for (int64_t j = 0; j < M + n; ++j)  // the stored score is the accumulated one
          ASSERT_FLOAT_EQ(scores[h][j].item<float>(), (acc[{i, h, pos[h][j]}]));
      }
    }
  }
  EXPECT_GE(compressions, 10);
}

TEST(Tova, KeepsTheBestSlotsByTheLastQueryAveragedOverHeads) {
  const ModelConfig c = tiny_config();
  const int64_t M = 12, b = 2, B = 8;
  auto cache = make_cache(c, bounded_options("tova", M, b, B));
  auto& slots = slot_cache(*cache);
  auto gen = at::detail::createCPUGenerator(6);
  std::vector<torch::Tensor> last(c.num_layers);  // the last row handed over, [Hkv, S]
  auto stats = [&](int i, int64_t S, int64_t) {
    AttentionStats s;
    s.last_query = last[i] = torch::rand({c.num_kv_heads, S}, gen);
    return s;
  };
  for (int step = 0; step < 20; ++step) {
    const bool due = cache->slots(0) > M + b;
    std::vector<std::vector<int64_t>> expected(c.num_layers);
    for (int i = 0; i < c.num_layers && due; ++i) {
      auto pos = positions_of(slots, i);
      std::vector<float> mean;
      for (size_t j = 0; j < pos[0].size(); ++j) mean.push_back(last[i][0][j].item<float>() + last[i][1][j].item<float>());
      auto best = ranked(mean);
      for (int64_t r = 0; r < M; ++r) expected[i].push_back(pos[0][best[r]]);
      expected[i] = sorted(expected[i]);
    }
    feed_chunk(*cache, c, B, stats);
    for (int i = 0; i < c.num_layers && due; ++i)
      for (const auto& head : positions_of(slots, i))  // every head keeps the same tokens
        ASSERT_EQ(std::vector<int64_t>(head.begin(), head.begin() + M), expected[i]) << "step " << step;
  }
}

TEST(SnapKv, KeepsTheBestPooledWindowVotesPlusTheWindow) {
  const ModelConfig c = tiny_config();
  const int64_t M = 16, b = 2, B = 8, w = 3, kernel = 3;
  CacheOptions o = bounded_options("snapkv", M, b, B);
  o.snapkv.observation_window = w;
  o.snapkv.pool_kernel = kernel;
  auto cache = make_cache(c, o);
  auto& slots = slot_cache(*cache);
  auto gen = at::detail::createCPUGenerator(8);
  std::vector<torch::Tensor> votes(c.num_layers);  // [Hkv, S]
  {  // the policy asks for the rows of the last w queries
    auto probe = make_cache(c, o);
    CacheChunk chunk = probe->begin_chunk(1);
    EXPECT_EQ(chunk.layer(0).stats_request().window, w);
  }
  auto stats = [&](int i, int64_t S, int64_t n) {
    AttentionStats s;
    s.window = torch::rand({c.num_kv_heads, std::min(w, n), S}, gen);
    votes[i] = s.window.sum(1);
    return s;
  };
  int checked = 0;
  for (int step = 0; step < 20; ++step) {
    const bool due = cache->slots(0) > M + b;
    std::vector<std::vector<std::vector<int64_t>>> expected(c.num_layers);
    std::vector<std::vector<bool>> tie_at_cut(c.num_layers);
    for (int i = 0; i < c.num_layers && due; ++i) {
      auto pos = positions_of(slots, i);
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        const int64_t L = pos[h].size();
        std::vector<float> pooled;
        for (int64_t j = 0; j < L - w; ++j) {  // max over the kernel's neighbours inside [0, L - w)
          float best = -1;
          for (int64_t t = std::max<int64_t>(0, j - kernel / 2); t <= std::min(L - w - 1, j + kernel / 2); ++t)
            best = std::max(best, votes[i][h][t].item<float>());
          pooled.push_back(best);
        }
        auto best = ranked(pooled);
        std::vector<int64_t> keep(best.begin(), best.begin() + (M - w));
        for (int64_t j = L - w; j < L; ++j) keep.push_back(j);
        std::vector<int64_t> order;
        for (auto j : sorted(keep)) order.push_back(pos[h][j]);
        expected[i].push_back(order);
        // Pooling copies a maximum to its neighbours: with a tie at the cut either token is right.
        tie_at_cut[i].push_back(pooled[best[M - w - 1]] == pooled[best[M - w]]);
      }
    }
    feed_chunk(*cache, c, B, stats);
    for (int i = 0; i < c.num_layers && due; ++i) {
      auto pos = positions_of(slots, i);
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        if (tie_at_cut[i][h]) continue;
        ASSERT_EQ(std::vector<int64_t>(pos[h].begin(), pos[h].begin() + M), expected[i][h]) << "step " << step;
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 20);
}

// lococo-hh against a selection written here from docs/DESIGN.md section 4: heavy hitters =
// top-(keep - w) of the first L - w by score plus the last w, in cache order; then
// --window-last keeps the same slots, with the local window moved after the
// fused (here: chosen) ones, so the newest tokens stay nearest the next chunk.
TEST(LococoOrder, WindowLastMovesTheRecentSlotsToTheEnd) {
  const ModelConfig c = tiny_config();
  const int64_t w = 4;
  std::vector<std::vector<std::vector<int64_t>>> kept;  // [order][head] positions after the run
  for (bool last : {false, true}) {
    CacheOptions o = bounded_options("lococo-hh", 16, 4, 8);
    o.lococo.local_window = w;
    o.lococo.window_last = last;
    auto cache = make_cache(c, o);
    auto gen = at::detail::createCPUGenerator(5);
    for (int chunk = 0; chunk < 3; ++chunk)  // 24 slots > M + b: the next chunk compresses (once)
      feed_chunk(*cache, c, 8, [&](int, int64_t S, int64_t) {
        AttentionStats s;
        s.column_sums = torch::rand({c.num_kv_heads, S}, gen);
        return s;
      });
    auto chunk = cache->begin_chunk(8);  // compresses; the positions are read before any append
    kept.push_back(positions_of(slot_cache(*cache), 0));
  }
  for (size_t h = 0; h < kept[0].size(); ++h) {
    const auto& reference = kept[0][h];
    const auto& moved = kept[1][h];
    ASSERT_EQ(reference.size(), 16u);
    // reference: [heavy (4) | window (4) | chosen (8)]; moved: [heavy | chosen | window]
    EXPECT_EQ(std::vector<int64_t>(moved.end() - w, moved.end()), std::vector<int64_t>(reference.begin() + 4, reference.begin() + 8));
    EXPECT_EQ(std::vector<int64_t>(moved.begin() + 4, moved.end() - w), std::vector<int64_t>(reference.begin() + 8, reference.end()));
    EXPECT_EQ(std::vector<int64_t>(moved.begin(), moved.begin() + 4), std::vector<int64_t>(reference.begin(), reference.begin() + 4));
    EXPECT_EQ(moved.back(), 23);  // the newest token seen (3 chunks of 8)
  }
}

// Scores of kept slots: overwritten by each chunk (decay 0, the reference),
// accumulated (1, as H2O), or in between.
TEST(LococoScores, DecayKeepsAShareOfEarlierChunks) {
  const ModelConfig c = tiny_config();
  for (double decay : {0.0, 0.5, 1.0}) {
    SCOPED_TRACE("decay " + std::to_string(decay));
    CacheOptions o = bounded_options("lococo-hh", 64, 4, 8);  // no compression within 16 tokens
    o.lococo.score_decay = decay;
    auto cache = make_cache(c, o);
    std::vector<torch::Tensor> first(c.num_layers), second(c.num_layers);
    auto sums = [](std::vector<torch::Tensor>& keep) {
      return [&keep](int i, int64_t S, int64_t) {
        AttentionStats s;
        s.column_sums = torch::rand({2, S});  // [Hkv, S]
        keep[i] = s.column_sums.clone();
        return s;
      };
    };
    feed_chunk(*cache, c, 8, sums(first));
    feed_chunk(*cache, c, 8, sums(second));
    for (int i = 0; i < c.num_layers; ++i) {
      auto want = second[i].clone();
      want.narrow(1, 0, 8).add_(first[i] * decay);
      EXPECT_TRUE(torch::allclose(slot_cache(*cache).stored_scores(i), want, 1e-6, 1e-7));
    }
  }
  CacheOptions bad = bounded_options("lococo", 64, 4, 8);
  bad.lococo.score_decay = 1.5;
  EXPECT_THROW(make_cache(c, bad), std::invalid_argument);
}

// the top-m of the others, in cache order.
TEST(LococoHh, EqualsTopKSelectionComputedIndependently) {
  const ModelConfig c = tiny_config();
  const int64_t M = 16, b = 4, B = 8, w = 2;
  CacheOptions o = bounded_options("lococo-hh", M, b, B);
  o.lococo.keep_rate = 0.5;
  o.lococo.local_window = w;
  const int64_t m = 8, keep = M - m;
  auto cache = make_cache(c, o);
  auto& slots = slot_cache(*cache);
  auto gen = at::detail::createCPUGenerator(9);
  auto stats = [&](int, int64_t S, int64_t) {
    AttentionStats s;
    s.column_sums = torch::rand({c.num_kv_heads, S}, gen);
    return s;
  };
  int compressions = 0;
  for (int step = 0; step < 25; ++step) {
    const bool due = cache->slots(0) > M + b;
    std::vector<std::vector<std::vector<int64_t>>> expected(c.num_layers);
    for (int i = 0; i < c.num_layers && due; ++i) {
      auto pos = positions_of(slots, i);
      auto scores = slots.stored_scores(i);
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        const int64_t L = pos[h].size();
        std::vector<float> s;
        for (int64_t j = 0; j < L; ++j) s.push_back(scores[h][j].item<float>());
        auto best = ranked(std::vector<float>(s.begin(), s.end() - w));
        std::vector<int64_t> heavy(best.begin(), best.begin() + (keep - w));
        for (int64_t j = L - w; j < L; ++j) heavy.push_back(j);
        heavy = sorted(heavy);
        std::vector<int64_t> rest;
        std::vector<float> rest_scores;
        for (int64_t j = 0; j < L; ++j)
          if (!std::binary_search(heavy.begin(), heavy.end(), j)) rest.push_back(j), rest_scores.push_back(s[j]);
        auto best_rest = ranked(rest_scores);
        std::vector<int64_t> chosen(best_rest.begin(), best_rest.begin() + m);
        std::vector<int64_t> order;
        for (auto j : heavy) order.push_back(pos[h][j]);
        for (auto r : sorted(chosen)) order.push_back(pos[h][rest[r]]);
        expected[i].push_back(order);
      }
    }
    feed_chunk(*cache, c, step % 4 == 3 ? 1 : B, stats);
    if (!due) continue;
    ++compressions;
    for (int i = 0; i < c.num_layers; ++i) {
      auto pos = positions_of(slots, i);
      auto values = slots.stored(i).values;
      for (int64_t h = 0; h < c.num_kv_heads; ++h) {
        ASSERT_EQ(std::vector<int64_t>(pos[h].begin(), pos[h].begin() + M), expected[i][h]) << "step " << step;
        for (int64_t j = 0; j < M; ++j) ASSERT_EQ(values[h][j][0].item<float>(), expected[i][h][j] + 1000 * h);
      }
    }
  }
  EXPECT_GE(compressions, 8);
}

// ---------------------------------------------------------------------------
// lococo with lambda = 0 is lococo-hh, through the whole model

TEST(Lococo, LambdaZeroEqualsHeavyHitters) {
  auto model = tiny_model(4, 4.0);
  const ModelConfig& c = model->config();
  auto tokens = random_tokens(700, 31);
  for (int64_t w : {0, 3}) {
    SCOPED_TRACE("local window " + std::to_string(w));
    CacheOptions o = bounded_options("lococo", 32, 4, 24);
    o.lococo.local_window = w;
    auto compressor = std::make_shared<LococoCompressor>(CompressorOptions::from(c, o), 5);
    {
      torch::NoGradGuard no_grad;
      for (int i = 0; i < c.num_layers; ++i) compressor->layer(i).lambda.fill_(0.0);
    }
    LococoCache lococo(c, o, compressor);
    o.policy = "lococo-hh";
    auto hh = make_cache(c, o);
    std::vector<torch::Tensor> expected;
    testing::stream(*model, *hh, tokens, 24, [&](const torch::Tensor& l) { expected.push_back(l); });
    size_t k = 0;
    testing::stream(*model, lococo, tokens, 24, [&](const torch::Tensor& l) {
      EXPECT_TRUE(torch::allclose(l, expected[k], 1e-5, 1e-5)) << "chunk " << k;
      ++k;
    });
    // The fused slots are copies: the stored keys and values match exactly.
    for (int i = 0; i < c.num_layers; ++i) {
      EXPECT_TRUE(torch::equal(lococo.stored(i).keys, slot_cache(*hh).stored(i).keys));
      EXPECT_TRUE(torch::equal(lococo.stored(i).values, slot_cache(*hh).stored(i).values));
    }
  }
}

// ---------------------------------------------------------------------------
// Positions

TEST(KvPolicies, CachePositionsStayBelowBudgetBufferChunkOver20000Tokens) {
  auto model = tiny_model();
  const int64_t M = 32, b = 8, B = 128, n = 20000;
  auto tokens = random_tokens(n, 41);
  for (const auto& policy : bounded_policies()) {
    SCOPED_TRACE(policy);
    CacheOptions o = bounded_options(policy, M, b, B);
    o.positions = PositionMode::Cache;
    auto cache = make_cache(model->config(), o);
    testing::stream(*model, *cache, tokens, B);
    EXPECT_EQ(cache->tokens_seen(), n);
    // max_position_used() is one past the largest position: every position is < M + b + B.
    EXPECT_LE(slot_cache(*cache).max_position_used(), M + b + B);
    EXPECT_GE(slot_cache(*cache).max_position_used(), M + B);
  }
  // Absolute positions keep counting (the reference behaviour).
  CacheOptions o = bounded_options("streaming", M, b, B);
  auto cache = make_cache(model->config(), o);
  testing::stream(*model, *cache, tokens.narrow(0, 0, 1000), B);
  EXPECT_EQ(slot_cache(*cache).max_position_used(), 1000);
}

// ---------------------------------------------------------------------------
// Options

TEST(KvPolicies, BadOptionsNameTheFlag) {
  const ModelConfig c = tiny_config();
  auto make = [&](const std::string& policy, auto tweak) {
    return [=] {
      CacheOptions o = bounded_options(policy, 32, 4, 16);
      tweak(o);
      make_cache(c, o);
    };
  };
  expect_invalid(make("streaming", [](CacheOptions& o) { o.streaming.sinks = 32; }), "--sinks");
  expect_invalid(make("streaming", [](CacheOptions& o) { o.budget = 0; }), "--budget");
  expect_invalid(make("h2o", [](CacheOptions& o) { o.buffer = -1; }), "--buffer");
  expect_invalid(make("h2o", [](CacheOptions& o) { o.h2o.recent = 33; }), "--recent");
  expect_invalid(make("tova", [](CacheOptions& o) { o.chunk = 0; }), "--chunk");
  expect_invalid(make("snapkv", [](CacheOptions& o) { o.snapkv.pool_kernel = 4; }), "--pool-kernel");
  expect_invalid(make("snapkv", [](CacheOptions& o) { o.snapkv.observation_window = 32; }), "--obs-window");
  expect_invalid(make("lococo-hh", [](CacheOptions& o) { o.lococo.keep_rate = 1.5; }), "--keep-rate");
  expect_invalid(make("lococo", [](CacheOptions& o) { o.lococo.keep_rate = -0.1; }), "--keep-rate");
  expect_invalid(make("lococo-hh", [](CacheOptions& o) { o.lococo.local_window = 17; }), "--local-window");
  expect_invalid(make("lococo", [](CacheOptions& o) { o.lococo.allow_untrained = false; }), "--compressor");
  expect_invalid(make("lru", [](CacheOptions&) {}), "unknown cache policy");
}

TEST(KvPolicies, EdgeOptionValuesRunAndStayBounded) {
  auto model = tiny_model();
  auto tokens = random_tokens(300, 3);
  auto run = [&](const std::string& policy, auto tweak) {
    CacheOptions o = bounded_options(policy, 16, 2, 8);
    tweak(o);
    SCOPED_TRACE(policy);
    auto cache = make_cache(model->config(), o);
    testing::stream(*model, *cache, tokens, 8, [&](const torch::Tensor& logits) {
      ASSERT_TRUE(torch::isfinite(logits).all().item<bool>());
      ASSERT_LE(cache->slots(0), 16 + 2 + 8);
    });
  };
  run("streaming", [](CacheOptions& o) { o.streaming.sinks = 0; });
  run("streaming", [](CacheOptions& o) { o.streaming.sinks = 15; });
  run("h2o", [](CacheOptions& o) { o.h2o.recent = 0; });
  run("h2o", [](CacheOptions& o) { o.h2o.recent = 16; });
  run("snapkv", [](CacheOptions& o) { o.snapkv.observation_window = 15; o.snapkv.pool_kernel = 1; });
  run("lococo", [](CacheOptions& o) { o.lococo.keep_rate = 1.0; });                       // m = 0: pure heavy hitters
  run("lococo", [](CacheOptions& o) { o.lococo.keep_rate = 0.0; });                       // keep = 0: everything fused
  run("lococo", [](CacheOptions& o) { o.lococo.keep_rate = 0.3; o.lococo.local_window = 5; });  // m = floor(16 * 0.7) = 11
  run("lococo-hh", [](CacheOptions& o) { o.buffer = 0; });
}

TEST(KvPolicies, DescribeAndResetKeepTheBuffers) {
  auto model = tiny_model();
  for (const auto& policy : bounded_policies()) {
    auto cache = make_cache(model->config(), bounded_options(policy, 16, 4, 8));
    EXPECT_EQ(cache->describe().rfind(policy + "(", 0), 0u) << cache->describe();
    testing::stream(*model, *cache, random_tokens(64, 2), 8);
    const int64_t bytes = cache->bytes();
    cache->reset();
    EXPECT_EQ(cache->slots(0), 0);
    EXPECT_EQ(cache->tokens_seen(), 0);
    EXPECT_EQ(cache->bytes(), bytes);
  }
}

}  // namespace
}  // namespace lococo
