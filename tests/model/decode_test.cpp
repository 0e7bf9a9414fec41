// decode_step: the allocation-free single-token path gives forward()'s logits
// under every policy and position scheme, and its steady state allocates no
// tensor storage.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include "alloc_counter.h"
#include "kv/slot_cache.h"
#include "lococo/model/decode.h"
#include "lococo/generate/generate.h"
#include "test_util.h"

namespace lococo {
namespace {

// A copy of `m` with every weight converted to `dtype` (tied heads stay tied).
LlamaModel with_dtype(const LlamaModel& m, const ModelConfig& c, torch::Dtype dtype) {
  LlamaWeights w = m.weights();
  for (auto& [name, t] : w.named(c)) *t = t->to(dtype, /*non_blocking=*/false, /*copy=*/true);
  if (c.tie_word_embeddings) w.lm_head = w.embed;
  return LlamaModel(c, std::move(w));
}

CacheOptions cache_options(const std::string& policy, PositionMode positions) {
  CacheOptions o;
  o.policy = policy;
  o.budget = 24;
  o.buffer = 4;
  o.chunk = 16;
  o.positions = positions;
  o.snapkv.observation_window = 8;
  o.lococo.allow_untrained = true;
  return o;
}

// Two caches of one policy (cache positions) holding the same prompt: one
// for forward(), one for decode_step().
std::pair<std::unique_ptr<KvCache>, std::unique_ptr<KvCache>> prefilled_pair(const LlamaModel& model,
                                                                             const std::string& policy,
                                                                             const torch::Tensor& prompt) {
  auto plain = make_cache(model.config(), cache_options(policy, PositionMode::Cache));
  auto fast = make_cache(model.config(), cache_options(policy, PositionMode::Cache));
  model.forward(prompt, plain.get());
  model.forward(prompt, fast.get());
  return {std::move(plain), std::move(fast)};
}

TEST(Decode, StepEqualsForwardForEveryPolicy) {
  const auto c = testing::tiny_config(4, 2);
  const LlamaModel model = testing::random_model(c, 3);
  ASSERT_TRUE(decode_step_supported(model));
  const auto prompt = testing::random_tokens(40, c.vocab_size, 1);
  const auto next = testing::random_tokens(60, c.vocab_size, 2);  // past several compressions
  torch::NoGradGuard no_grad;
  for (const auto& policy : cache_policy_names())
    for (PositionMode positions : {PositionMode::Absolute, PositionMode::Cache}) {
      SCOPED_TRACE(policy + " " + to_string(positions));
      auto plain = make_cache(c, cache_options(policy, positions));
      auto fast = make_cache(c, cache_options(policy, positions));
      for (auto* cache : {plain.get(), fast.get()})
        for (int64_t s = 0; s < prompt.size(0); s += 16) model.forward(prompt.narrow(0, s, std::min<int64_t>(16, prompt.size(0) - s)), cache);
      DecodeState state(c);
      for (int64_t t = 0; t < next.size(0); ++t) {
        const int64_t token = next[t].item<int64_t>();
        const auto want = model.forward(torch::tensor({token}), plain.get(), LogitsFor::Last).flatten();
        const auto& got = decode_step(model, *fast, token, state);
        // Sums in another order than libtorch's, compounded over 60 steps and
        // lococo's fusion (an untrained, nearly one-hot softmax): 1e-4 of the
        // largest logit bounds it on the CPUs tried (AMD Zen 5, Intel SPR).
        testing::expect_close(got, want, 1e-4, 1e-5);
        ASSERT_EQ(fast->slots(0), plain->slots(0));
      }
    }
}

// The thread team splits rows and heads differently for every team size (and
// members steal each other's blocks as they go); no logit may change by a bit.
TEST(Decode, ThreadCountDoesNotChangeTheLogits) {
  const int threads_before = at::get_num_threads();
  const auto c = testing::tiny_config(4, 2);
  const LlamaModel model = testing::random_model(c, 4);
  const auto prompt = testing::random_tokens(24, c.vocab_size, 1);
  const auto next = testing::random_tokens(30, c.vocab_size, 2);
  torch::NoGradGuard no_grad;
  for (const char* policy : {"full", "h2o"}) {
    SCOPED_TRACE(policy);
    std::vector<torch::Tensor> first;  // logits of each step with one thread
    for (int threads : {1, 2, 3}) {
      at::set_num_threads(threads);
      auto cache = make_cache(c, cache_options(policy, PositionMode::Absolute));
      model.forward(prompt, cache.get());
      DecodeState state(c);
      for (int64_t t = 0; t < next.size(0); ++t) {
        const auto logits = decode_step(model, *cache, next[t].item<int64_t>(), state).clone();
        if (threads == 1)
          first.push_back(logits);
        else
          ASSERT_TRUE(torch::equal(logits, first[static_cast<size_t>(t)])) << threads << " threads, step " << t;
      }
    }
  }
  at::set_num_threads(threads_before);
}

TEST(Decode, StepEqualsForwardWithBiasAndUntiedHead) {
  auto c = testing::tiny_config(4, 1);  // Qwen2-like: q/k/v bias, a separate LM head, one KV head
  c.attention_bias = true;
  c.tie_word_embeddings = false;
  const LlamaModel model = testing::random_model(c, 9);
  torch::NoGradGuard no_grad;
  auto [plain, fast] = prefilled_pair(model, "h2o", testing::random_tokens(16, c.vocab_size, 3));
  DecodeState state(c);
  for (int64_t token : {5, 9, 11, 40, 2, 63, 17, 8, 8, 30, 1, 0}) {
    const auto want = model.forward(torch::tensor({token}), plain.get(), LogitsFor::Last).flatten();
    testing::expect_close(decode_step(model, *fast, token, state), want, 1e-5, 1e-5);
  }
}

TEST(Decode, SupportedForFp32AndBf16WithoutLora) {
  const auto c = testing::tiny_config();
  LlamaModel model = testing::random_model(c);
  EXPECT_TRUE(decode_step_supported(model));
  model.mutable_weights().layers[0].q.lora_a = torch::zeros({2, c.hidden_size});
  EXPECT_FALSE(decode_step_supported(model));
  EXPECT_TRUE(decode_step_supported(with_dtype(testing::random_model(c), c, torch::kBFloat16)));
  EXPECT_FALSE(decode_step_supported(with_dtype(testing::random_model(c), c, torch::kFloat16)));
  DecodeState state(c);
  auto cache = make_cache(c, {});
  EXPECT_THROW(decode_step(testing::random_model(c), *cache, c.vocab_size, state), std::invalid_argument);
  CacheOptions bf16_cache;
  bf16_cache.dtype = torch::kBFloat16;
  auto narrow_cache = make_cache(c, bf16_cache);
  EXPECT_THROW(decode_step(testing::random_model(c), *narrow_cache, 1, state), std::invalid_argument);
}

// bf16 weights: decode_step's products read bf16 weights and their input
// vector rounded to bf16, summed in fp32; everything else stays fp32. Against
// the fp32 computation on the same (bf16-rounded) weights its logits stay
// within 5% of the largest logit (measured here: 0.2-2.9%), and closer than
// forward()'s bf16 arithmetic (bf16 activations throughout: 1-45%) on every token.
TEST(Decode, Bf16WeightsStayCloserToFp32ThanBf16Forward) {
  auto c = testing::tiny_config(4, 2);
  c.attention_bias = true;
  c.tie_word_embeddings = false;
  LlamaModel random = testing::random_model(c, 4);
  {
    torch::NoGradGuard no_grad;  // norms away from 1, so reading them as bf16 matters
    auto gen = at::detail::createCPUGenerator(5);
    for (auto& [name, t] : random.mutable_weights().named(c))
      if (name.find("norm") != std::string::npos) t->copy_(at::normal(1.0, 0.3, t->sizes(), gen));
  }
  const LlamaModel bf16 = with_dtype(random, c, torch::kBFloat16);
  const LlamaModel rounded = with_dtype(bf16, c, torch::kFloat32);
  torch::NoGradGuard no_grad;
  const auto prompt = testing::random_tokens(32, c.vocab_size, 6);
  auto [plain, fast] = prefilled_pair(rounded, "lococo-hh", prompt);
  auto slow = prefilled_pair(bf16, "lococo-hh", prompt).first;
  DecodeState state(c);
  const auto next = testing::random_tokens(30, c.vocab_size, 7);
  for (int64_t t = 0; t < next.size(0); ++t) {
    const int64_t token = next[t].item<int64_t>();
    const auto want = rounded.forward(torch::tensor({token}), plain.get(), LogitsFor::Last).flatten();
    const auto via_forward = bf16.forward(torch::tensor({token}), slow.get(), LogitsFor::Last).flatten();
    const auto& got = decode_step(bf16, *fast, token, state);
    testing::expect_close(got, want, 0.05, 1e-3);
    EXPECT_LT((got - want).abs().max().item<double>(), (via_forward.to(torch::kFloat32) - want).abs().max().item<double>())
        << "token " << t;
  }
}

// The steady state: a full cache with room (capacity reserved by an earlier,
// longer sequence) and keys stored rotated. 100 steps, no tensor storage.
TEST(Decode, SteadyStateAllocatesNothing) {
  const auto c = testing::tiny_config();
  const LlamaModel model = testing::random_model(c);
  auto cache = make_cache(c, cache_options("full", PositionMode::Absolute));
  torch::NoGradGuard no_grad;
  model.forward(testing::random_tokens(256, c.vocab_size, 4), cache.get());  // grows the buffers
  cache->reset();
  model.forward(testing::random_tokens(16, c.vocab_size, 5), cache.get());
  DecodeState state(c);
  decode_step(model, *cache, 7, state);  // first call: nothing left to size
  auto& counter = testing::CountingCpuAllocator::instance();
  counter.start();
  int64_t token = 7;
  for (int step = 0; step < 100; ++step) token = greedy_token(decode_step(model, *cache, token, state));
  EXPECT_EQ(counter.stop(), 0);
  EXPECT_EQ(cache->slots(0), 16 + 101);
}

// Bounded policies with keys stored before RoPE (the CLI default), between
// compressions: the buffer b is large enough that none falls due in 100 steps.
TEST(Decode, BoundedPoliciesAllocateNothingBetweenCompressions) {
  const auto c = testing::tiny_config();
  const LlamaModel model = testing::random_model(c);
  torch::NoGradGuard no_grad;
  for (const char* policy : {"streaming", "h2o", "tova", "lococo-hh"}) {
    SCOPED_TRACE(policy);
    auto o = cache_options(policy, PositionMode::Cache);
    o.budget = 32;
    o.buffer = 128;
    auto cache = make_cache(c, o);
    model.forward(testing::random_tokens(16, c.vocab_size, 5), cache.get());
    DecodeState state(c);
    int64_t token = greedy_token(decode_step(model, *cache, 7, state));
    auto& counter = testing::CountingCpuAllocator::instance();
    counter.start();
    for (int step = 0; step < 100; ++step) token = greedy_token(decode_step(model, *cache, token, state));
    EXPECT_EQ(counter.stop(), 0);
    EXPECT_EQ(cache->slots(0), 16 + 101);  // no compression fell due
  }
}

}  // namespace
}  // namespace lococo

namespace lococo {
namespace {

// A bf16 cache is refused before anything is touched: no layer appended, no
// token counted, and the cache goes on working with forward().
TEST(Decode, RefusesABf16CacheBeforeTouchingIt) {
  const auto c = testing::tiny_config(4, 2);
  const LlamaModel model = testing::random_model(c, 3);
  CacheOptions o = cache_options("h2o", PositionMode::Cache);
  o.dtype = torch::kBFloat16;
  auto cache = make_cache(c, o);
  torch::NoGradGuard no_grad;
  model.forward(testing::random_tokens(8, c.vocab_size, 1), cache.get());
  DecodeState state(c);
  EXPECT_THROW(decode_step(model, *cache, 5, state), std::invalid_argument);
  EXPECT_EQ(cache->tokens_seen(), 8);
  for (int i = 0; i < c.num_layers; ++i) EXPECT_EQ(cache->slots(i), 8);
  EXPECT_FALSE(cache->broken());
  model.forward(testing::random_tokens(4, c.vocab_size, 2), cache.get());
  EXPECT_EQ(cache->tokens_seen(), 12);
}

// SnapKV ranks slots by the last w queries whatever the chunking: a prompt
// read in one chunk and the same prompt whose last w tokens are decoded one at
// a time leave the same votes.
TEST(Decode, SnapKvKeepsAWindowOfQueriesWhenDecoding) {
  const auto c = testing::tiny_config(4, 2);
  const LlamaModel model = testing::random_model(c, 3);
  CacheOptions o = cache_options("snapkv", PositionMode::Cache);
  o.budget = 64;  // no compression within the 40 tokens below
  o.chunk = 40;
  const int64_t w = o.snapkv.observation_window;
  const auto prompt = testing::random_tokens(40, c.vocab_size, 4);
  torch::NoGradGuard no_grad;
  auto whole = make_cache(c, o);
  model.forward(prompt, whole.get());
  auto stepped = make_cache(c, o);
  model.forward(prompt.narrow(0, 0, 40 - w), stepped.get());
  DecodeState state(c);
  for (int64_t t = 40 - w; t < 40; ++t) decode_step(model, *stepped, prompt[t].item<int64_t>(), state);
  for (int i = 0; i < c.num_layers; ++i) {
    const auto& a = dynamic_cast<const SlotCache&>(*whole);
    const auto& b = dynamic_cast<const SlotCache&>(*stepped);
    testing::expect_close(b.stored_scores(i), a.stored_scores(i), 1e-4, 1e-5);
  }
}

}  // namespace
}  // namespace lococo
