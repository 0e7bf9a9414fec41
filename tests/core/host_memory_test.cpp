// Weight memory (host_memory.h) and the BLAS threading probe (cpu_features.h).
#include <gtest/gtest.h>

#include <cstdint>

#include "lococo/core/cpu_features.h"
#include "core/host_memory.h"

namespace lococo {
namespace {

TEST(HostMemory, LargeTensorsAreHugePageAlignedAndUsable) {
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    torch::Tensor t = empty_weight_tensor({1024, 1536}, dtype);  // 6 or 3 MiB
    EXPECT_EQ(t.sizes(), (std::vector<int64_t>{1024, 1536}));
    EXPECT_EQ(t.scalar_type(), dtype);
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % (2 << 20), 0u);
    t.fill_(3);
    t[1023][1535] = 5;
    EXPECT_EQ((t == 3).sum().item<int64_t>(), 1024 * 1536 - 1);
    EXPECT_EQ(t[1023][1535].item<float>(), 5.0f);
  }
  torch::Tensor small = empty_weight_tensor({8, 8}, torch::kFloat32);  // from libtorch's allocator
  EXPECT_EQ(small.numel(), 64);
  EXPECT_TRUE(small.is_contiguous());
}

TEST(HostMemory, BlasThreadingIsRecognised) {
  // libtorch here calls OpenBLAS; scripts/setup.sh selects its OpenMP build.
  const std::string mode = blas_threading();
  EXPECT_TRUE(mode == "openmp" || mode == "pthreads" || mode == "sequential") << mode;
}

}  // namespace
}  // namespace lococo
