// The fused CPU attention kernel against the plain one and against explicit
// probability matrices: forward, statistics, gradients (plus a finite-difference
// check in double), on every SIMD variant this CPU can run, and the dispatch.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "lococo/ops/attention.h"
#include "ops/attention_fast.h"
#include "lococo/core/cpu_features.h"
#include "test_util.h"

namespace lococo {
namespace {

using testing::expect_close;

// ---- helpers ------------------------------------------------------------------------------
struct Case {
  int64_t B, Hq, Hkv, T, cache, d;
  std::string name() const {
    return "B" + std::to_string(B) + " Hq" + std::to_string(Hq) + " Hkv" + std::to_string(Hkv) + " T" +
           std::to_string(T) + " cache" + std::to_string(cache) + " d" + std::to_string(d);
  }
};

struct Qkv {
  torch::Tensor q;  // [B, Hq, T, d]
  torch::Tensor k;  // [B, Hkv, S, d]
  torch::Tensor v;  // [B, Hkv, S, d]
};

// Scores of std ~1.5 after scaling: attention neither uniform nor one-hot.
Qkv random_qkv(const Case& c, uint64_t seed, torch::Dtype dtype = torch::kFloat32) {
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t S = c.cache + c.T;
  auto o = torch::TensorOptions().dtype(dtype);
  return {at::normal(0.0, 1.2, {c.B, c.Hq, c.T, c.d}, gen, o), at::normal(0.0, 1.2, {c.B, c.Hkv, S, c.d}, gen, o),
          at::normal(0.0, 1.0, {c.B, c.Hkv, S, c.d}, gen, o)};
}

// The explicit probability matrix in double: [B, Hq, T, S].
torch::Tensor explicit_probs(const Qkv& x) {
  const int64_t Hq = x.q.size(1), Hkv = x.k.size(1), T = x.q.size(2), S = x.k.size(2), d = x.q.size(3);
  auto k = x.k.to(torch::kFloat64).repeat_interleave(Hq / Hkv, 1);  // [B, Hq, S, d]
  auto s = torch::matmul(x.q.to(torch::kFloat64), k.transpose(-1, -2)) / std::sqrt(double(d));
  auto t = torch::arange(T).view({T, 1}), j = torch::arange(S).view({1, S});
  return torch::softmax(s.masked_fill(j > t + (S - T), -INFINITY), -1);
}

// Sums the G query heads of each KV head: [Hq, ...] -> [Hkv, ...].
torch::Tensor sum_groups(const torch::Tensor& per_head, int64_t Hkv) {
  auto sizes = per_head.sizes().vec();
  sizes[0] /= Hkv;
  sizes.insert(sizes.begin(), Hkv);
  return per_head.reshape(sizes).sum(1);
}

// Runs `body` once per SIMD level this CPU supports, restoring the cap after.
template <class F>
void for_each_simd_level(F body) {
  for (int l = 0; l <= static_cast<int>(detected_simd_level()); ++l) {
    const auto level = static_cast<SimdLevel>(l);
    SCOPED_TRACE("simd " + to_string(level));
    set_simd_level_cap(level);
    body();
  }
  set_simd_level_cap(SimdLevel::Avx512Bf16);
}

// Runs `body` with `n` intra-op threads, restoring the count after.
template <class F>
auto with_threads(int n, F body) {
  const int before = at::get_num_threads();
  at::set_num_threads(n);
  auto result = body();
  at::set_num_threads(before);
  return result;
}

// The grid the issue asks for: MHA and GQA x chunk 1, 7, 128 x cache 0, 5, 300 x d 32, 64.
std::vector<Case> forward_grid() {
  std::vector<Case> cases;
  for (auto [Hq, Hkv] : {std::pair<int64_t, int64_t>{4, 4}, {8, 2}})
    for (int64_t T : {1, 7, 128})
      for (int64_t cache : {0, 5, 300})
        for (int64_t d : {32, 64}) cases.push_back({1, Hq, Hkv, T, cache, d});
  cases.push_back({3, 6, 2, 33, 0, 32});   // a training batch: B > 1, no cache
  cases.push_back({2, 4, 1, 70, 9, 40});   // G = 4, d not a multiple of the vector width
  return cases;
}

// ---- forward --------------------------------------------------------------------------------
TEST(Attention, FastForwardEqualsPlain) {
  torch::NoGradGuard g;
  for_each_simd_level([] {
    uint64_t seed = 0;
    for (const Case& c : forward_grid()) {
      SCOPED_TRACE(c.name());
      const Qkv x = random_qkv(c, seed++);
      expect_close(attention_fast(x.q, x.k, x.v), attention_plain(x.q, x.k, x.v, {}, nullptr), 1e-5, 0.0);
    }
  });
}

TEST(Attention, LogSumExpMatchesScores) {
  torch::NoGradGuard g;
  const Case c{2, 4, 2, 20, 11, 32};
  const Qkv x = random_qkv(c, 7);
  auto [out, lse] = attention_fast_forward(x.q, x.k, x.v);
  const int64_t S = x.k.size(2), T = c.T;
  auto k = x.k.to(torch::kFloat64).repeat_interleave(2, 1);
  auto s = torch::matmul(x.q.to(torch::kFloat64), k.transpose(-1, -2)) / std::sqrt(32.0);
  auto t = torch::arange(T).view({T, 1}), j = torch::arange(S).view({1, S});
  auto ref = torch::logsumexp(s.masked_fill(j > t + (S - T), -INFINITY), -1);  // [B, Hq, T]
  expect_close(lse.to(torch::kFloat64), ref, 1e-6, 0.0);
}

TEST(Attention, StatisticsEqualExplicitProbabilities) {
  torch::NoGradGuard g;
  AttentionStatsRequest request;
  request.column_sums = true;
  request.last_query = true;
  request.window = 8;
  for_each_simd_level([&] {
    uint64_t seed = 100;
    for (const Case& c : forward_grid()) {
      if (c.B != 1) continue;
      SCOPED_TRACE(c.name());
      const Qkv x = random_qkv(c, seed++);
      AttentionStats stats;
      attention_fast(x.q, x.k, x.v, request, &stats);
      auto p = explicit_probs(x)[0];  // [Hq, T, S]
      const int64_t w = std::min<int64_t>(8, c.T);
      expect_close(stats.column_sums.to(torch::kFloat64), sum_groups(p.sum(1), c.Hkv), 1e-5, 1e-6);
      expect_close(stats.last_query.to(torch::kFloat64), sum_groups(p.select(1, c.T - 1), c.Hkv), 1e-5, 1e-6);
      expect_close(stats.window.to(torch::kFloat64), sum_groups(p.narrow(1, c.T - w, w), c.Hkv), 1e-5, 1e-6);
    }
  });
}

TEST(Attention, StatisticsAloneWithoutColumnSums) {
  // TOVA / SnapKV ask for rows only: no column sums are made.
  torch::NoGradGuard g;
  const Case c{1, 8, 2, 128, 300, 32};
  const Qkv x = random_qkv(c, 3);
  AttentionStatsRequest request;
  request.window = 5;
  AttentionStats stats;
  attention_fast(x.q, x.k, x.v, request, &stats);
  EXPECT_FALSE(stats.column_sums.defined());
  EXPECT_FALSE(stats.last_query.defined());
  auto p = explicit_probs(x)[0];
  expect_close(stats.window.to(torch::kFloat64), sum_groups(p.narrow(1, c.T - 5, 5), c.Hkv), 1e-5, 1e-6);
}

TEST(Attention, NonContiguousAndHalfPrecisionInputs) {
  torch::NoGradGuard g;
  const Case c{1, 4, 2, 16, 5, 32};
  const Qkv x = random_qkv(c, 11);
  // The model hands over transposed views of [B, T, H, d] projections.
  auto q = x.q.transpose(1, 2).contiguous().transpose(1, 2);
  expect_close(attention_fast(q, x.k, x.v), attention_plain(x.q, x.k, x.v, {}, nullptr), 1e-5, 0.0);
  auto qb = x.q.to(torch::kBFloat16), kb = x.k.to(torch::kBFloat16), vb = x.v.to(torch::kBFloat16);
  auto out = attention(qb, kb, vb);
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  expect_close(out.to(torch::kFloat32), attention_plain(qb, kb, vb, {}, nullptr).to(torch::kFloat32), 2e-2);
}

// ---- backward ---------------------------------------------------------------------------------
struct Grads {
  torch::Tensor out, dq, dk, dv;
};

// out and d(sum(out * upstream)) / d(q, k, v) through the chosen implementation.
Grads grads_of(const Qkv& x0, const torch::Tensor& upstream, bool fast) {
  auto q = x0.q.clone().requires_grad_(true), k = x0.k.clone().requires_grad_(true);
  auto v = x0.v.clone().requires_grad_(true);
  auto out = fast ? attention_fast(q, k, v) : attention_plain(q, k, v, {}, nullptr);
  (out * upstream).sum().backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

TEST(Attention, FastGradientsEqualPlain) {
  for_each_simd_level([] {
    uint64_t seed = 200;
    for (const Case& c : {Case{1, 4, 4, 7, 0, 32}, Case{1, 8, 2, 128, 0, 64}, Case{1, 8, 2, 7, 300, 32},
                          Case{2, 4, 2, 128, 5, 32}, Case{1, 4, 1, 1, 300, 64}, Case{2, 6, 3, 45, 0, 40}}) {
      SCOPED_TRACE(c.name());
      const Qkv x = random_qkv(c, seed++);
      auto upstream = torch::randn_like(x.q);
      const Grads f = grads_of(x, upstream, true), p = grads_of(x, upstream, false);
      expect_close(f.out, p.out, 1e-5, 0.0);
      expect_close(f.dq, p.dq, 1e-4, 0.0);
      expect_close(f.dk, p.dk, 1e-4, 0.0);
      expect_close(f.dv, p.dv, 1e-4, 0.0);
    }
  });
}

TEST(Attention, GradientOnlyForKeysAndValuesWithStatistics) {
  // Compressor training: gradients reach k, v (the compressed cache), not q,
  // while the cache also asks for statistics in the same call.
  const Case c{1, 4, 2, 9, 20, 32};
  const Qkv x = random_qkv(c, 5);
  AttentionStatsRequest request;
  request.column_sums = true;
  AttentionStats fast_stats, plain_stats;
  auto k = x.k.clone().requires_grad_(true), v = x.v.clone().requires_grad_(true);
  attention_fast(x.q, k, v, request, &fast_stats).pow(2).sum().backward();
  auto k2 = x.k.clone().requires_grad_(true), v2 = x.v.clone().requires_grad_(true);
  attention_plain(x.q, k2, v2, request, &plain_stats).pow(2).sum().backward();
  expect_close(k.grad(), k2.grad(), 1e-4, 0.0);
  expect_close(v.grad(), v2.grad(), 1e-4, 0.0);
  expect_close(fast_stats.column_sums, plain_stats.column_sums.detach(), 1e-5, 1e-6);
  EXPECT_FALSE(fast_stats.column_sums.requires_grad());
}

TEST(Attention, TwoThreadsMatchOneAndRepeatBitForBit) {
  // Two workers split the tiles and sum their own dQ accumulators; training
  // resumes bit for bit (train_test), so a repeat must give the same bits.
  const Case c{2, 8, 4, 150, 0, 32};
  const Qkv x = random_qkv(c, 17);
  auto upstream = torch::randn_like(x.q);
  const Grads one = with_threads(1, [&] { return grads_of(x, upstream, true); });
  const Grads a = with_threads(2, [&] { return grads_of(x, upstream, true); });
  const Grads b = with_threads(2, [&] { return grads_of(x, upstream, true); });
  expect_close(a.out, one.out, 1e-6, 0.0);
  expect_close(a.dq, one.dq, 1e-5, 0.0);
  expect_close(a.dk, one.dk, 1e-5, 0.0);
  expect_close(a.dv, one.dv, 1e-5, 0.0);
  EXPECT_TRUE(torch::equal(a.dq, b.dq));
  EXPECT_TRUE(torch::equal(a.dk, b.dk));
  EXPECT_TRUE(torch::equal(a.dv, b.dv));
  // Statistics with two workers too.
  torch::NoGradGuard g;
  const Qkv y = random_qkv({1, 8, 2, 128, 300, 32}, 18);
  AttentionStatsRequest request;
  request.column_sums = true;
  request.window = 4;
  AttentionStats s1, s2;
  with_threads(1, [&] { return attention_fast(y.q, y.k, y.v, request, &s1); });
  with_threads(2, [&] { return attention_fast(y.q, y.k, y.v, request, &s2); });
  EXPECT_TRUE(torch::equal(s1.column_sums, s2.column_sums));
  EXPECT_TRUE(torch::equal(s1.window, s2.window));
}

TEST(Attention, DoubleGradientsMatchFiniteDifferences) {
  const Case c{2, 4, 2, 5, 4, 8};
  const Qkv x = random_qkv(c, 9, torch::kFloat64);
  auto upstream = torch::randn_like(x.q);
  auto loss = [&](const Qkv& y) { return (attention_fast(y.q, y.k, y.v) * upstream).sum().item<double>(); };
  const Grads g = grads_of(x, upstream, true);
  const double eps = 1e-6;
  // Central differences on every element of q, k and v.
  for (auto [name, which] : {std::pair<const char*, int>{"q", 0}, {"k", 1}, {"v", 2}}) {
    SCOPED_TRACE(name);
    Qkv y{x.q.clone(), x.k.clone(), x.v.clone()};
    torch::Tensor& t = which == 0 ? y.q : which == 1 ? y.k : y.v;
    auto flat = t.view(-1);
    auto numeric = torch::empty_like(t);
    auto nflat = numeric.view(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double x0 = flat[i].item<double>();
      flat[i] = x0 + eps;
      const double up = loss(y);
      flat[i] = x0 - eps;
      const double down = loss(y);
      flat[i] = x0;
      nflat[i] = (up - down) / (2 * eps);
    }
    expect_close(which == 0 ? g.dq : which == 1 ? g.dk : g.dv, numeric, 1e-6, 1e-8);
  }
}

// ---- dispatch ------------------------------------------------------------------------------------
std::string grad_fn_name(const torch::Tensor& t) { return t.grad_fn() ? t.grad_fn()->name() : ""; }

TEST(Attention, DispatchChoosesFastOnCpuFloatAndHonoursPlain) {
  const Case c{1, 4, 2, 6, 3, 32};
  const Qkv x = random_qkv(c, 13);
  auto q = x.q.clone().requires_grad_(true);
  EXPECT_NE(grad_fn_name(attention(q, x.k, x.v)).find("FastAttention"), std::string::npos);
  EXPECT_EQ(grad_fn_name(attention(q, x.k, x.v, {}, nullptr, AttentionKernel::Plain)).find("FastAttention"),
            std::string::npos);
  set_default_attention_kernel(AttentionKernel::Plain);
  const std::string with_plain_default = grad_fn_name(attention(q, x.k, x.v));
  set_default_attention_kernel(AttentionKernel::Auto);
  EXPECT_EQ(with_plain_default.find("FastAttention"), std::string::npos);
  EXPECT_TRUE(attention_fast_supported(x.q, x.k, x.v));
  EXPECT_FALSE(attention_fast_supported(x.q.to(torch::kInt32), x.k.to(torch::kInt32), x.v.to(torch::kInt32)));
}

TEST(Attention, SimdLevelsParseAndCap) {
  EXPECT_EQ(parse_simd_level("avx2"), SimdLevel::Avx2);
  EXPECT_THROW(parse_simd_level("sse9"), std::invalid_argument);
  set_simd_level_cap(SimdLevel::Scalar);
  EXPECT_EQ(active_simd_level(), SimdLevel::Scalar);
  set_simd_level_cap(SimdLevel::Avx512Bf16);
  EXPECT_EQ(active_simd_level(), detected_simd_level());
}

}  // namespace
}  // namespace lococo
