// Learned retention (docs/DESIGN.md sections 4 and 9): its file round trip, the
// cache ranking tokens by it and not by attention, scores that do not depend on
// chunking, and the far-attention targets it is trained against.
#include <cmath>
#include <filesystem>

#include <unistd.h>

#include <gtest/gtest.h>

#include "kv/kv_test_support.h"
#include "kv/lococo_cache.h"
#include "lococo/kv/compressor.h"
#include "lococo/kv/far_attention.h"
#include "lococo/kv/lococo.h"
#include "lococo/kv/registry.h"

namespace lococo {
namespace {

namespace fs = std::filesystem;
using testing::random_tokens;
using testing::tiny_config;
using testing::tiny_model;

CacheOptions retention_cache(double keep_rate) {
  CacheOptions o = testing::bounded_options("lococo", 16, 4, 8);
  o.positions = PositionMode::Cache;
  o.lococo.keep_rate = keep_rate;
  o.lococo.local_window = 4;
  o.lococo.retention_decay = 0;  // ranked by score alone unless a test says otherwise
  o.lococo.retention_long_term = 0;
  return o;
}

std::shared_ptr<LococoCompressor> retention_compressor(const CacheOptions& cache, uint64_t seed = 5) {
  CompressorOptions o = CompressorOptions::from(tiny_config(), cache);
  o.kernel = 3;
  o.retention_hidden = 6;
  return std::make_shared<LococoCompressor>(o, seed);
}

TEST(LearnedRetention, FileRoundTripKeepsTheMlps) {
  const fs::path file = fs::temp_directory_path() / ("lococo_retention_" + std::to_string(::getpid()) + ".safetensors");
  auto c = retention_compressor(retention_cache(0.5));
  c->save(file);
  auto loaded = LococoCompressor::load(file);
  fs::remove(file);
  EXPECT_EQ(loaded->options().retention_hidden, 6);
  auto keys = torch::randn({2, 5, 8}), values = torch::randn({2, 5, 8});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(c->layer(1).retention_scores(keys, values), loaded->layer(1).retention_scores(keys, values)));
  // The two kinds of parameters are told apart: retention is trained on its own.
  EXPECT_EQ(c->retention_parameters().size(), 2u * 4u);  // 2 layers x (2 weights + 2 biases)
  EXPECT_EQ(c->retention_parameters().size() + c->fusion_parameters().size(), c->named_parameters().size());
}

// A copy head: a second output per head, saved and loaded with the file; a
// fresh one flags nothing; the cache stores protect + logit for the tokens it
// flags and caps the others' scores just below protect.
TEST(LearnedRetention, CopyHeadDecidesWhatScoresAboveProtect) {
  const auto cache_options = retention_cache(1.0);
  CompressorOptions o = CompressorOptions::from(tiny_config(), cache_options);
  o.retention_hidden = 6;
  o.retention_copy = true;
  auto c = std::make_shared<LococoCompressor>(o, 3);
  const fs::path file = fs::temp_directory_path() / ("lococo_copy_head_" + std::to_string(::getpid()) + ".safetensors");
  c->save(file);
  auto loaded = LococoCompressor::load(file);
  fs::remove(file);
  EXPECT_TRUE(loaded->options().retention_copy);
  auto keys = torch::randn({2, 9, 8}), values = torch::randn({2, 9, 8});
  torch::NoGradGuard no_grad;
  const auto out = loaded->layer(0).retention_outputs(keys, values);
  ASSERT_TRUE(out.copy.defined());
  EXPECT_EQ(out.copy.sizes(), out.scores.sizes());
  EXPECT_TRUE(torch::allclose(out.copy, torch::full_like(out.copy, kCopyInitLogit)));  // flags nothing yet
  EXPECT_TRUE(torch::equal(out.scores, c->layer(0).retention_scores(keys, values)));
  // Composition, by hand.
  const auto scores = torch::tensor({{5.0f, 1.0f, 0.5f}}), copy = torch::tensor({{-1.0f, 2.0f, -3.0f}});
  const auto stored = copy_aware_scores(scores, copy, 2.5);
  EXPECT_TRUE(torch::allclose(stored, torch::tensor({{2.5f - float(kBelowProtect), 4.5f, 0.5f}})));
  // In the cache: with a copy logit > 0 for every token of layer 0, every
  // stored score there is protect + logit.
  loaded->layer(0).retention->named_parameters()["2.bias"].narrow(0, 2, 2).fill_(50);
  auto model = tiny_model(3, 4.0);
  LococoCache cache(tiny_config(), cache_options, loaded);
  testing::stream(*model, cache, random_tokens(12, 4), 12);
  EXPECT_GT(cache.stored_scores(0).narrow(1, 4, 8).min().item<float>(), cache_options.lococo.retention_protect);
  EXPECT_LT(cache.stored_scores(1).narrow(1, 4, 8).max().item<float>(), cache_options.lococo.retention_protect);
}

TEST(LearnedRetention, ScoresAreEachTokensOwnWhateverTheChunking) {
  auto model = tiny_model(3, 4.0);
  const auto cache_options = retention_cache(1.0);
  auto compressor = retention_compressor(cache_options);
  const auto tokens = random_tokens(19, 11);  // below M + b: nothing is evicted
  LococoCache whole(tiny_config(), cache_options, compressor), pieces(tiny_config(), cache_options, compressor);
  testing::stream(*model, whole, tokens, 19);
  testing::stream(*model, pieces, tokens, 3);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(torch::allclose(whole.stored_scores(i), pieces.stored_scores(i), 1e-5, 1e-5)) << "layer " << i;
    // ... and they are the MLP's scores of the stored keys (before RoPE) and
    // values, but for the first 4 tokens (attention sinks), which outrank all.
    const KeysValues kv = whole.stored(i);
    torch::NoGradGuard no_grad;
    const auto mlp = compressor->layer(i).retention_scores(kv.keys, kv.values);  // [Hkv, 19]
    EXPECT_TRUE(torch::allclose(whole.stored_scores(i).narrow(1, 4, 15), mlp.narrow(1, 4, 15), 1e-6, 1e-6));
    EXPECT_GT(whole.stored_scores(i).narrow(1, 0, 4).min().item<float>(), 100 * mlp.abs().max().item<float>());
  }
}

TEST(LearnedRetention, CompressionKeepsTheTokensScoredHighest) {
  auto model = tiny_model(3, 4.0);
  const auto cache_options = retention_cache(1.0);  // no fusion: the kept slots are exactly the chosen tokens
  auto compressor = retention_compressor(cache_options);
  const auto tokens = random_tokens(40, 12);
  LococoCache cache(tiny_config(), cache_options, compressor);
  // The scores every token gets (each token's own, so a cache that never evicts shows them all;
  // a retention-only file serves any budget).
  auto full_options = cache_options;
  full_options.budget = 64;
  LococoCache reference(tiny_config(), full_options, compressor);
  testing::stream(*model, reference, tokens.narrow(0, 0, 32), 8);
  testing::stream(*model, cache, tokens.narrow(0, 0, 32), 8);  // 24 slots > M + b = 20 before the 4th chunk
  const auto every = reference.stored_scores(0);             // [Hkv, 32]
  const auto kept = cache.stored_positions(0);               // [Hkv, slots]
  for (int64_t h = 0; h < 2; ++h) {
    // Compressed at the start of the 4th chunk: of tokens 0..23, the last w = 4 kept as the
    // window, the 4 sinks, and the 8 best of tokens 4..19 by their retention scores.
    auto best = torch::cat({torch::arange(4), 4 + std::get<1>(every[h].narrow(0, 4, 16).topk(8))});
    auto want = std::get<0>(torch::cat({best, torch::arange(20, 24)}).sort());
    EXPECT_TRUE(torch::equal(kept[h].narrow(0, 0, 16), want)) << kept[h] << want;
  }
}

TEST(LearnedRetention, AgingRanksOlderTokensLowerButNotTheSinksOrTheLongTermSlots) {
  auto model = tiny_model(3, 4.0);
  auto cache_options = retention_cache(1.0);
  auto compressor = retention_compressor(cache_options);
  const auto tokens = random_tokens(32, 12);
  auto full_options = cache_options;
  full_options.budget = 64;
  LococoCache reference(tiny_config(), full_options, compressor);  // never evicts: every token's own score
  testing::stream(*model, reference, tokens, 8);
  const auto every = reference.stored_scores(0);  // [Hkv, 32]
  auto kept_with = [&](double decay, int64_t long_term, double protect) {
    auto o = cache_options;
    o.lococo.retention_decay = decay;
    o.lococo.retention_long_term = long_term;
    o.lococo.retention_protect = protect;
    LococoCache cache(tiny_config(), o, compressor);
    testing::stream(*model, cache, tokens, 8);
    return cache.stored_positions(0).narrow(1, 0, 16);  // compressed at the start of the 4th chunk, of tokens 0..23
  };
  // 100 per token of age, far beyond the scores' spread: the 8 heavy slots are the newest of 4..19.
  const auto sinks = torch::arange(4), window = torch::arange(20, 24);
  const auto newest = kept_with(1e5, 0, 0);
  for (int64_t h = 0; h < 2; ++h)
    EXPECT_TRUE(torch::equal(newest[h], torch::cat({sinks, torch::arange(12, 24)}))) << newest[h];
  // 3 long-term slots for any score: the 3 best of 4..19 by score, then the 5 newest of the others.
  const auto mixed = kept_with(1e5, 3, -1e3);
  for (int64_t h = 0; h < 2; ++h) {
    const auto best = 4 + std::get<1>(every[h].narrow(0, 4, 16).topk(3));
    std::vector<int64_t> want(sinks.data_ptr<int64_t>(), sinks.data_ptr<int64_t>() + 4);
    for (int64_t t = 19, newer = 0; newer < 5; --t)
      if (!(best == t).any().item<bool>()) want.push_back(t), ++newer;
    auto expected = std::get<0>(torch::cat({torch::tensor(want), best, window}).sort());
    EXPECT_TRUE(torch::equal(mixed[h], expected)) << mixed[h] << expected;
  }
  // A protect threshold above every score leaves the long-term slots empty: aging alone.
  EXPECT_TRUE(torch::equal(kept_with(1e5, 3, 1e3), newest));
  // No aging: the 8 best by score, as without the options.
  EXPECT_TRUE(torch::equal(kept_with(0, 0, 0), kept_with(0, 8, -1e3)));
  auto bad = cache_options;
  bad.lococo.retention_decay = -0.5;
  EXPECT_THROW(LococoCache(tiny_config(), bad, compressor), std::invalid_argument);
  bad = cache_options;
  bad.lococo.retention_long_term = -1;
  EXPECT_THROW(LococoCache(tiny_config(), bad, compressor), std::invalid_argument);
}

TEST(LearnedRetention, SinkCountIsRecordedAndBounded) {
  auto cache_options = retention_cache(1.0);
  CompressorOptions o = CompressorOptions::from(tiny_config(), cache_options);
  o.retention_hidden = 4;
  o.retention_sinks = 12;  // M - m - w = 16 - 0 - 4
  EXPECT_NO_THROW(o.validate());
  o.retention_sinks = 13;
  EXPECT_THROW(o.validate(), std::invalid_argument);
  o.retention_sinks = 2;
  const fs::path file = fs::temp_directory_path() / ("lococo_sinks_" + std::to_string(::getpid()) + ".safetensors");
  LococoCompressor(o, 1).save(file);
  EXPECT_EQ(LococoCompressor::load(file)->options().retention_sinks, 2);
  fs::remove(file);
}

TEST(LearnedRetention, ARetentionOnlyFileFitsAnyBudgetAndWindow) {
  auto compressor = retention_compressor(retention_cache(1.0));  // M 16, w 4, 4 sinks
  auto other = retention_cache(1.0);
  other.budget = 40;
  other.lococo.local_window = 20;
  {
    // ... and the split is the cache's: M = 40 slots after a compression, the last w = 20 tokens among them.
    auto model = tiny_model(3, 4.0);
    LococoCache cache(tiny_config(), other, compressor);
    testing::stream(*model, cache, random_tokens(64, 13), 8);  // compressed when 64 > M + b = 44
    const auto kept = std::get<0>(cache.stored_positions(0)[0].sort());
    ASSERT_EQ(kept.size(0), 40 + 8);  // M, then the chunk that followed the compression
    EXPECT_TRUE(torch::equal(kept.narrow(0, 40 - 20, 28), torch::arange(36, 64))) << kept;
  }
  other.budget = 8;
  other.lococo.local_window = 5;  // 3 heavy slots cannot hold the 4 sinks
  EXPECT_THROW(LococoCache(tiny_config(), other, compressor), std::invalid_argument);
  // With fused slots the convs are shaped for their budget: another one is refused by name.
  auto fusing = retention_cache(0.5);
  auto fused = retention_compressor(fusing);
  fusing.budget = 24;
  try {
    LococoCache c(tiny_config(), fusing, fused);
    ADD_FAILURE() << "a fusing compressor accepted another budget";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("budget"), std::string::npos) << e.what();
  }
}

TEST(LearnedRetention, TheFileSetsTheSplitUnlessItIsGiven) {
  const fs::path dir = fs::temp_directory_path() / ("lococo_split_" + std::to_string(::getpid()));
  fs::create_directories(dir / "compressors");
  retention_compressor(retention_cache(1.0))->save(dir / "compressors" / "m16.safetensors");  // r 1, w 4
  CacheOptions o = testing::bounded_options("lococo", 16, 4, 8);  // r 0.5, w 0
  o.lococo.allow_untrained = false;  // the model's own file
  o.lococo.keep_rate_from_file = o.lococo.local_window_from_file = true;
  const CacheOptions adopted = resolve_compressor(o, dir);
  EXPECT_EQ(adopted.lococo.keep_rate, 1.0);
  EXPECT_EQ(adopted.lococo.local_window, 4);
  // A split given by name (CLI flag, Python keyword, saved state) wins.
  const CacheOptions given = resolve_compressor(apply_cache_options_json(o, {{"local_window", 2}}), dir);
  EXPECT_EQ(given.lococo.keep_rate, 1.0);
  EXPECT_EQ(given.lococo.local_window, 2);
  o.lococo.keep_rate_from_file = o.lococo.local_window_from_file = false;
  EXPECT_EQ(resolve_compressor(o, dir).lococo.keep_rate, 0.5);
  fs::remove_all(dir);
}

TEST(LearnedRetention, NeedsCachePositions) {
  auto cache_options = retention_cache(1.0);
  auto compressor = retention_compressor(cache_options);
  cache_options.positions = PositionMode::Absolute;
  EXPECT_THROW(LococoCache(tiny_config(), cache_options, compressor), std::invalid_argument);
}

// ---------------------------------------------------------------------------
// Far attention: the training targets

torch::Tensor far_scores(const LlamaModel& model, const torch::Tensor& tokens, int64_t chunk, int64_t far, int layer) {
  CacheOptions o = testing::bounded_options("full", 16, 4, chunk);
  auto cache = make_far_attention_cache(tiny_config(), o, far);
  testing::stream(model, *cache, tokens, chunk);
  return cache->stored_scores(layer);
}

TEST(FarAttention, TargetsDoNotDependOnChunkingAndShrinkWithDistance) {
  auto model = tiny_model(4, 3.0);
  const auto tokens = random_tokens(48, 21);
  for (int layer = 0; layer < 2; ++layer) {
    const auto one = far_scores(*model, tokens, 48, 8, layer), pieces = far_scores(*model, tokens, 5, 8, layer);
    EXPECT_TRUE(torch::allclose(one, pieces, 1e-5, 1e-6)) << "layer " << layer;
    // Attention summed over the G = 2 query heads of a KV head: in [0, 2].
    EXPECT_GE(one.min().item<float>(), 0.0f);
    EXPECT_LE(one.max().item<float>(), 2.0f + 1e-5f);
    EXPECT_GT(one.narrow(1, 0, 40).min().item<float>(), 0.0f);  // every token before 48 - far was read
    EXPECT_EQ(one.narrow(1, 41, 7).abs().max().item<float>(), 0.0f);  // no query is 8 after these
    // Fewer queries count from farther away: the maximum can only drop.
    const auto farther = far_scores(*model, tokens, 48, 20, layer);
    EXPECT_TRUE((farther <= one + 1e-6).all().item<bool>());
    EXPECT_TRUE((farther < one - 1e-6).any().item<bool>());
  }
}

TEST(FarAttention, OneQueryAtDistanceOneIsTheAttentionRow) {
  // far = 1 with 2 tokens: token 0's score is what query 1 gives it, and
  // 1 minus what query 1 gives itself (rows sum to 1 per head, G = 2 heads).
  auto model = tiny_model(4, 3.0);
  const auto tokens = random_tokens(2, 5);
  const auto s = far_scores(*model, tokens, 2, 1, 0);  // [Hkv, 2]
  EXPECT_EQ(s.select(1, 1).abs().max().item<float>(), 0.0f);
  EXPECT_GT(s.select(1, 0).min().item<float>(), 0.0f);
  EXPECT_LT(s.select(1, 0).max().item<float>(), 2.0f);
  EXPECT_THROW(make_far_attention_cache(tiny_config(), testing::bounded_options("full", 16, 4, 2), 0),
               std::invalid_argument);
}

}  // namespace
}  // namespace lococo
