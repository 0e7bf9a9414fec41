// The cache protocol as CacheChunk drives it: order enforced, an interrupted
// chunk leaves the cache broken until reset(), the registry's traits.
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "kv/kv_test_support.h"
#include "lococo/kv/registry.h"

namespace lococo {
namespace {

using testing::tiny_config;

// Expects an exception whose message contains `part`.
template <typename F>
void expect_message(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

torch::Tensor rows(const ModelConfig& c, int64_t n) {
  return torch::randn({c.num_kv_heads, n, c.head_dim});  // [Hkv, n, d]
}

void append_all(CacheChunk& chunk, const ModelConfig& c, int64_t n) {
  for (int i = 0; i < c.num_layers; ++i) {
    auto kv = rows(c, n);
    chunk.layer(i).append(kv, kv, kv);
  }
}

TEST(CacheChunk, DrivesTheCacheAndCountsTokens) {
  const ModelConfig c = tiny_config();
  auto cache = make_cache(c, testing::bounded_options("h2o", 16, 4, 8));
  for (int64_t step = 0; step < 5; ++step) {
    CacheChunk chunk = cache->begin_chunk(8);
    append_all(chunk, c, 8);
    chunk.end();
  }
  EXPECT_EQ(cache->tokens_seen(), 40);
  EXPECT_LE(cache->slots(0), 16 + 4 + 8);
  EXPECT_FALSE(cache->broken());
}

TEST(CacheChunk, RefusesOutOfOrderUse) {
  const ModelConfig c = tiny_config();
  auto cache = make_cache(c, testing::bounded_options("streaming", 16, 4, 8));
  {
    CacheChunk chunk = cache->begin_chunk(4);
    EXPECT_THROW(cache->begin_chunk(4), std::logic_error);  // one chunk at a time
    auto kv = rows(c, 4);
    chunk.layer(0).append(kv, kv, kv);
    EXPECT_THROW(chunk.layer(0).append(kv, kv, kv), std::logic_error);  // twice
    EXPECT_THROW(chunk.end(), std::logic_error);                        // layer 1 missing
    EXPECT_THROW(chunk.layer(c.num_layers), std::out_of_range);
  }
  // The chunk above was left unfinished: the cache refuses more until reset().
  EXPECT_TRUE(cache->broken());
  EXPECT_THROW(cache->begin_chunk(4), std::logic_error);
  cache->reset();
  EXPECT_FALSE(cache->broken());
  EXPECT_EQ(cache->tokens_seen(), 0);
  CacheChunk chunk = cache->begin_chunk(4);
  append_all(chunk, c, 4);
  chunk.end();
  EXPECT_EQ(cache->tokens_seen(), 4);
}

TEST(CacheChunk, AnExceptionInAModelForwardBreaksTheCache) {
  const ModelConfig c = tiny_config();
  auto model = testing::tiny_model(1);
  auto cache = make_cache(c, testing::bounded_options("h2o", 16, 4, 8));
  model->forward(testing::random_tokens(8, 1), cache.get());
  // A bad chunk shape fails inside the first layer's append.
  torch::NoGradGuard g;
  CacheChunk chunk = cache->begin_chunk(2);
  auto wrong = torch::randn({c.num_kv_heads + 1, 2, c.head_dim});
  EXPECT_ANY_THROW(chunk.layer(0).append(wrong, wrong, wrong));
}

TEST(CacheChunk, AForwardThatThrowsLeavesTheCacheBroken) {
  const ModelConfig c = tiny_config();
  auto model = testing::tiny_model(1);
  auto cache = make_cache(c, testing::bounded_options("h2o", 16, 4, 8));
  model->forward(testing::random_tokens(8, 1), cache.get());
  // Layer 1's slots are gone mid-chunk (a cache of another model's depth).
  auto shallow = tiny_config();
  shallow.num_layers = 1;
  auto other = make_cache(shallow, testing::bounded_options("h2o", 16, 4, 8));
  EXPECT_ANY_THROW(model->forward(testing::random_tokens(8, 2), other.get()));
  EXPECT_TRUE(other->broken());
  EXPECT_THROW(model->forward(testing::random_tokens(8, 2), other.get()), std::logic_error);
}

TEST(CacheChunk, UnrotatedAppendsOnlyWhereTheCacheOffersThem) {
  const ModelConfig c = tiny_config();
  CacheOptions o = testing::bounded_options("h2o", 16, 4, 8);
  o.positions = PositionMode::Absolute;
  auto absolute = make_cache(c, o);
  EXPECT_FALSE(absolute->can_append_unrotated());
  CacheChunk chunk = absolute->begin_chunk(2);
  auto kv = rows(c, 2);
  EXPECT_THROW(chunk.layer(0).append_unrotated(kv, kv, kv), std::logic_error);
  o.positions = PositionMode::Cache;
  EXPECT_TRUE(make_cache(c, o)->can_append_unrotated());
}

TEST(PolicyRegistry, TraitsNamesAndCompressorLookup) {
  EXPECT_EQ(cache_policy_names().size(), cache_policies().size());
  EXPECT_FALSE(is_bounded(reference_policy()));
  EXPECT_TRUE(cache_policy(trained_policy()).needs_compressor);
  EXPECT_TRUE(is_bounded(baseline_policy()));
  for (const auto& p : cache_policies()) EXPECT_NE(p.make, nullptr) << p.name;
  expect_message([] { cache_policy("nope"); }, "streaming");

  const auto dir = std::filesystem::temp_directory_path() / ("lococo-chunk-test-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  // A model directory keeps compressors inside; a GGUF file beside itself.
  EXPECT_EQ(model_compressor_path(dir, 64), dir / "compressors" / "m64.safetensors");
  EXPECT_EQ(model_compressor_path(dir / "tiny.gguf", 64), dir / "tiny.compressors" / "m64.safetensors");
  CacheOptions o;
  o.policy = trained_policy();
  o.budget = 64;
  expect_message([&] { resolve_compressor(o, dir / "tiny.gguf"); }, (dir / "tiny.compressors" / "m64.safetensors").string());
  std::filesystem::create_directories(dir / "tiny.compressors");
  std::ofstream(dir / "tiny.compressors" / "m64.safetensors") << "x";
  EXPECT_EQ(resolve_compressor(o, dir / "tiny.gguf").lococo.compressor,
            (dir / "tiny.compressors" / "m64.safetensors").string());
  o.policy = "h2o";
  EXPECT_EQ(resolve_compressor(o, dir / "none.gguf").lococo.compressor, "");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace lococo
