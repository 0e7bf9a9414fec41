// gemv: every instruction-set variant computes W x for fp32 and bf16 weights
// (x read in bf16 against bf16 weights, rounded as torch rounds it) within
// float rounding of a double-precision reference, for shapes with
// ragged rows (not a multiple of 4) and columns (not a multiple of a vector),
// and the split across threads does not change a single bit.
#include <gtest/gtest.h>

#include <cmath>
#include <iterator>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "lococo/core/cpu_features.h"
#include "ops/gemv.h"

namespace lococo {
namespace {

// Restores the SIMD cap and thread count a test changed.
struct Restore {
  int threads = at::get_num_threads();
  ~Restore() {
    set_simd_level_cap(SimdLevel::Avx512Bf16);
    at::set_num_threads(threads);
  }
};

std::vector<SimdLevel> levels_here() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : {SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512, SimdLevel::Avx512Bf16})
    if (l <= detected_simd_level()) out.push_back(l);
  return out;
}

torch::Tensor run(const torch::Tensor& w, const torch::Tensor& x) {
  auto y = torch::full({w.size(0)}, std::nanf(""));  // every row must be written
  gemv(w, x.data_ptr<float>(), y.data_ptr<float>());
  return y;
}

TEST(Gemv, MatchesDoublePrecisionForEveryVariantAndDtype) {
  Restore restore;
  auto gen = at::detail::createCPUGenerator(7);
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 5}, {7, 33}, {64, 64}, {130, 517}})
    for (torch::Dtype dtype : {torch::kFloat32, torch::kBFloat16}) {
      const auto w = at::normal(0, 1, {rows, cols}, gen).to(dtype);
      const auto x = at::normal(0, 1, {cols}, gen);
      // The reference sees exactly the stored weights (bf16 widens exactly)
      // and, for bf16 weights, x rounded to bf16 as the kernels read it.
      const auto x_read = dtype == torch::kBFloat16 ? x.to(torch::kBFloat16) : x;
      const auto want = torch::mv(w.to(torch::kFloat64), x_read.to(torch::kFloat64));
      const double tol = 1e-5 * std::sqrt(static_cast<double>(cols)) * (x.abs().max().item<double>() + 1);
      for (SimdLevel level : levels_here()) {
        SCOPED_TRACE(to_string(level) + " " + c10::toString(dtype) + " " + std::to_string(rows) + "x" +
                     std::to_string(cols));
        set_simd_level_cap(level);
        const auto got = run(w, x).to(torch::kFloat64);
        EXPECT_LT((got - want).abs().max().item<double>(), tol);
      }
    }
}

TEST(Gemv, AttentionRowKernelsMatchDoublePrecision) {
  // Rows `ld` apart inside a wider buffer, as a cache's slots are: dot_rows gives
  // W x, add_weighted_rows adds W^T p to what y holds.
  Restore restore;
  auto gen = at::detail::createCPUGenerator(11);
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 7}, {33, 64}, {300, 80}}) {
    const int64_t ld = cols + 3;
    const auto buffer = at::normal(0, 1, {rows, ld}, gen);
    const auto w = buffer.narrow(1, 0, cols);
    const auto x = at::normal(0, 1, {cols}, gen), p = at::normal(0, 1, {rows}, gen), y0 = at::normal(0, 1, {cols}, gen);
    const auto w64 = w.to(torch::kFloat64);
    const auto want_dots = torch::mv(w64, x.to(torch::kFloat64));
    const auto want_sum = y0.to(torch::kFloat64) + torch::mv(w64.t(), p.to(torch::kFloat64));
    const double tol = 1e-5 * std::sqrt(static_cast<double>(std::max(rows, cols))) * 4;
    for (SimdLevel level : levels_here()) {
      SCOPED_TRACE(to_string(level) + " " + std::to_string(rows) + "x" + std::to_string(cols));
      set_simd_level_cap(level);
      auto dots = torch::full({rows}, std::nanf(""));
      dot_rows(buffer.data_ptr<float>(), rows, cols, ld, x.data_ptr<float>(), dots.data_ptr<float>());
      EXPECT_LT((dots.to(torch::kFloat64) - want_dots).abs().max().item<double>(), tol);
      auto sum = y0.clone();
      add_weighted_rows(buffer.data_ptr<float>(), rows, cols, ld, p.data_ptr<float>(), sum.data_ptr<float>());
      EXPECT_LT((sum.to(torch::kFloat64) - want_sum).abs().max().item<double>(), tol);
    }
  }
}

TEST(Gemv, RopeRowsRotateEachRowByItsAngles) {
  // Keys `ld` apart; row r turns by angles (r + 1) * f_j, in apply_rope()'s
  // pairing (j with j + d/2). Reference in double precision.
  Restore restore;
  auto gen = at::detail::createCPUGenerator(12);
  for (int64_t d : {6, 64, 80}) {
    const int64_t rows = 37, half = d / 2, ld = d + 5;
    const auto keys = at::normal(0, 1, {rows, ld}, gen);
    auto angles = torch::empty({rows, half}, torch::kFloat64);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < half; ++j) angles[r][j] = (r + 1) * std::pow(10000.0, -2.0 * j / d);
    const auto cos = angles.cos().to(torch::kFloat32), sin = angles.sin().to(torch::kFloat32);
    const auto k64 = keys.narrow(1, 0, d).to(torch::kFloat64);
    const auto x1 = k64.narrow(1, 0, half), x2 = k64.narrow(1, half, half);
    const auto c64 = cos.to(torch::kFloat64), s64 = sin.to(torch::kFloat64);
    const auto want = torch::cat({x1 * c64 - x2 * s64, x2 * c64 + x1 * s64}, 1);
    for (SimdLevel level : levels_here()) {
      SCOPED_TRACE(to_string(level) + " d=" + std::to_string(d));
      set_simd_level_cap(level);
      auto out = torch::full({rows, d}, std::nanf(""));
      rope_rows(keys.data_ptr<float>(), rows, d, ld, cos.data_ptr<float>(), sin.data_ptr<float>(), out.data_ptr<float>());
      EXPECT_LT((out.to(torch::kFloat64) - want).abs().max().item<double>(), 1e-5);
    }
  }
}

// round_to_bf16 gives torch's bf16 conversion bit for bit (nearest, ties to
// even) in every variant, for ties, denormals, infinities and NaN too.
TEST(Gemv, RoundToBf16IsTorchsConversion) {
  Restore restore;
  auto gen = at::detail::createCPUGenerator(9);
  auto x = at::normal(0, 100, {1000}, gen);
  const float specials[] = {0.0f, -0.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 3.0e-39f, -1.0e-40f,
                            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::max(), std::nanf("")};
  for (size_t i = 0; i < std::size(specials); ++i) x[static_cast<int64_t>(i)] = specials[i];
  const auto want = x.to(torch::kBFloat16);
  const auto* want_bits = reinterpret_cast<const uint16_t*>(want.data_ptr<at::BFloat16>());
  for (SimdLevel level : levels_here()) {
    SCOPED_TRACE(to_string(level));
    set_simd_level_cap(level);
    for (int64_t n : {int64_t{1000}, int64_t{7}}) {  // vectors and a tail
      std::vector<uint16_t> got(static_cast<size_t>(n));
      round_to_bf16(x.data_ptr<float>(), n, got.data());
      for (int64_t i = 0; i < n; ++i)
        if (std::isnan(x[i].item<float>()))
          EXPECT_TRUE(std::isnan(c10::BFloat16(got[i], c10::BFloat16::from_bits()))) << i;
        else
          EXPECT_EQ(got[i], want_bits[i]) << "x[" << i << "] = " << x[i].item<float>();
    }
  }
}

// softmax_rows: every variant (libmvec's vector expf where vectors are wide)
// within float rounding of softmax in double, for rows with a tail, a row
// whose scores span far apart (tiny probabilities) and a one-slot row.
TEST(Gemv, SoftmaxRowsMatchDoublePrecision) {
  Restore restore;
  auto gen = at::detail::createCPUGenerator(10);
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{{3, 37}, {2, 1000}, {1, 1}}) {
    auto scores = at::normal(0, 30, {rows, n}, gen);
    const float scale = 0.125f;
    const auto want = torch::softmax(scores.to(torch::kFloat64) * scale, 1);
    for (SimdLevel level : levels_here()) {
      SCOPED_TRACE(to_string(level) + " " + std::to_string(rows) + "x" + std::to_string(n));
      set_simd_level_cap(level);
      auto got = scores.clone();
      softmax_rows(got.data_ptr<float>(), rows, n, scale);
      EXPECT_LT((got.to(torch::kFloat64) - want).abs().max().item<double>(), 1e-6);
      EXPECT_LT(((got.to(torch::kFloat64) - want).abs() / want.clamp_min(1e-30)).max().item<double>(), 1e-5);
    }
  }
}

TEST(Gemv, ThreadSplitIsBitIdentical) {
  Restore restore;
  auto gen = at::detail::createCPUGenerator(8);
  const auto w = at::normal(0, 1, {1027, 301}, gen);  // above the parallel threshold, ragged rows
  const auto x = at::normal(0, 1, {301}, gen);
  at::set_num_threads(1);
  const auto one = run(w, x);
  at::set_num_threads(2);
  EXPECT_TRUE(torch::equal(run(w, x), one));
}

TEST(Gemv, RefusesWhatItCannotRead) {
  float x[4] = {}, y[4] = {};
  EXPECT_THROW(gemv(torch::zeros({4, 4}, torch::kFloat64), x, y), std::invalid_argument);
  EXPECT_THROW(gemv(torch::zeros({4, 8}).t(), x, y), std::invalid_argument);  // not contiguous
  EXPECT_THROW(gemv(torch::zeros({4}), x, y), std::invalid_argument);
  EXPECT_FALSE(gemv_supported(torch::zeros({4, 4}, torch::kFloat16)));
  EXPECT_TRUE(gemv_supported(torch::zeros({4, 4}, torch::kBFloat16)));
}

}  // namespace
}  // namespace lococo
