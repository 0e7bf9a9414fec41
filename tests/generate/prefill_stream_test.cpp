// A prompt fed piece by piece (PrefillStream) is read in the same chunks as
// prefill() of the whole prompt: the same logits and the same cache, and the
// incremental fingerprint equals the one-shot one.
#include <gtest/gtest.h>

#include "lococo/generate/generate.h"
#include "lococo/generate/saved_state.h"
#include "lococo/kv/registry.h"
#include "test_util.h"

namespace lococo {
namespace {

TEST(PrefillStream, PiecesOfAnySizeReadAsTheWholePrompt) {
  testing::TempDir dir;
  const LoadedModel m = testing::tokenized_tiny_model(dir.path());
  CacheOptions o;
  o.policy = "h2o";
  o.budget = 24;
  o.chunk = 16;
  const torch::Tensor t = testing::random_tokens(150, m.model->config().vocab_size, 3);
  const std::vector<int64_t> ids(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  torch::NoGradGuard no_grad;
  auto whole_cache = make_cache(m.model->config(), o);
  const torch::Tensor whole = prefill(*m.model, *whole_cache, ids, o.chunk);  // [V]
  auto cache = make_cache(m.model->config(), o);
  PrefillStream stream(*m.model, *cache, o.chunk);
  TextFingerprint fp;
  // Pieces of 1, 7, 16, 33, 1, 7, ... ids: shorter, equal to and longer than a chunk.
  const std::vector<size_t> sizes = {1, 7, 16, 33};
  for (size_t at = 0, k = 0; at < ids.size(); ++k) {
    const size_t n = std::min(sizes[k % sizes.size()], ids.size() - at);
    const std::vector<int64_t> piece(ids.begin() + at, ids.begin() + at + n);
    stream.feed(piece);
    fp.add(piece);
    at += n;
  }
  EXPECT_EQ(stream.tokens(), 150);
  const torch::Tensor streamed = stream.finish();
  EXPECT_TRUE(torch::equal(streamed, whole));
  EXPECT_EQ(cache->tokens_seen(), whole_cache->tokens_seen());
  for (int l = 0; l < cache->num_layers(); ++l) EXPECT_TRUE(torch::equal(cache->stored(l).keys, whole_cache->stored(l).keys));
  EXPECT_EQ(fp.digest(), text_fingerprint(ids));
  TextFingerprint chained(text_fingerprint({1, 2}));
  chained.add({3, 4});
  EXPECT_EQ(chained.digest(), text_fingerprint({3, 4}, text_fingerprint({1, 2})));
  PrefillStream empty(*m.model, *cache, o.chunk);
  EXPECT_THROW(empty.finish(), std::invalid_argument);
}

}  // namespace
}  // namespace lococo
