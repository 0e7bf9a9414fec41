#include "core/host_memory.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace lococo {

torch::Tensor empty_weight_tensor(at::IntArrayRef sizes, torch::Dtype dtype) {
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) * c10::elementSize(dtype);
  if (bytes < kHugePage) return torch::empty(sizes, torch::TensorOptions().dtype(dtype));
  // libtorch's CPU allocator aligns to 64 bytes only, so this one buffer is
  // allocated here: whole huge pages, advised before the first touch.
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (!p) throw std::bad_alloc();
  madvise(p, rounded, MADV_HUGEPAGE);  // advice: refused or not, p is usable memory
  return torch::from_blob(p, sizes, [](void* q) { std::free(q); }, torch::TensorOptions().dtype(dtype));
}

}  // namespace lococo
