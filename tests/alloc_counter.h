// Counts tensor-storage allocations (every CPU tensor's data comes from
// c10's CPU allocator) while a scope is active, to check that a loop allocates
// nothing. Tensor headers (TensorImpl objects of views) are small heap objects
// that the allocator does not see; they are not counted.
#pragma once

#include <atomic>
#include <cstdint>

#include <c10/core/CPUAllocator.h>

namespace lococo::testing {

class CountingCpuAllocator final : public c10::Allocator {
 public:
  // Installs itself in front of the current CPU allocator (once per process).
  static CountingCpuAllocator& instance() {
    static CountingCpuAllocator* self = [] {
      auto* a = new CountingCpuAllocator(c10::GetCPUAllocator());
      c10::SetCPUAllocator(a, /*priority=*/100);
      return a;
    }();
    return *self;
  }
  c10::DataPtr allocate(size_t n) const override {
    if (counting_) ++count_;
    return inner_->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return inner_->raw_deleter(); }

  void start() { count_ = 0, counting_ = true; }
  int64_t stop() {
    counting_ = false;
    return count_;
  }

 private:
  explicit CountingCpuAllocator(c10::Allocator* inner) : inner_(inner) {}
  c10::Allocator* inner_;
  mutable std::atomic<int64_t> count_{0};
  std::atomic<bool> counting_{false};
};

}  // namespace lococo::testing
