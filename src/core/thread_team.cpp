// The team run and its spinning barrier; thread_team.h says why.
#include "core/thread_team.h"

#include <algorithm>
#include <thread>

#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LOCOCO_CPU_RELAX() _mm_pause()
#else
#define LOCOCO_CPU_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace lococo {
namespace {
// Spins before each yield: about 10-50 us, longer than the serial steps
// between decode's parallel ones, so a dedicated core never yields.
constexpr int kSpinsBeforeYield = 4096;
// A member claims this fraction of what it has left at a time (thread_team.h).
constexpr int64_t kShareDivisor = 4;

// One wait step of a spinning loop: a pause, and now and then a yield.
class Backoff {
 public:
  void wait() {
    if (++spins_ < kSpinsBeforeYield) {
      LOCOCO_CPU_RELAX();
    } else {
      spins_ = 0;
      std::this_thread::yield();
    }
  }

 private:
  int spins_ = 0;
};
}  // namespace

bool Team::arrive_and_wait(int size) {
  // The generation is read before arriving: it cannot change until this
  // member has arrived, so it names the phase this member waits to end.
  const int generation = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == size - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.store(generation + 1, std::memory_order_release);
    return !failed();
  }
  for (Backoff backoff; generation_.load(std::memory_order_acquire) == generation; backoff.wait())
    if (failed()) return false;
  return !failed();
}

namespace {
uint64_t pack(int64_t begin, int64_t end) { return static_cast<uint64_t>(end) << 32 | static_cast<uint64_t>(begin); }
int64_t begin_of(uint64_t range) { return static_cast<int64_t>(range & 0xffffffffu); }
int64_t end_of(uint64_t range) { return static_cast<int64_t>(range >> 32); }
}  // namespace

void Team::set_blocks(int m, int64_t loop, int64_t begin, int64_t end) {
  blocks_[m].range.store(pack(begin, end), std::memory_order_relaxed);
  blocks_[m].loop.store(loop, std::memory_order_release);  // publishes the range
}

std::pair<int64_t, int64_t> Team::take_own(int m) {
  std::atomic<uint64_t>& range = blocks_[m].range;
  // A thief may shrink the range between this read and the claim; the claim
  // returns the range as it was and keeps only what was still there.
  const uint64_t now = range.load(std::memory_order_acquire);
  const int64_t left = end_of(now) - begin_of(now);
  if (left <= 0) return {0, 0};
  const int64_t share = std::max<int64_t>(1, left / kShareDivisor);
  const uint64_t before = range.fetch_add(static_cast<uint64_t>(share), std::memory_order_acq_rel);
  const int64_t first = begin_of(before);
  return {first, std::max(first, std::min(first + share, end_of(before)))};
}

bool Team::steal(int m, int size, int64_t loop) {
  for (int k = 1; k < size; ++k) {
    Blocks& v = blocks_[(m + k) % size];
    // A member that has not begun this loop still shows the last one's
    // (drained) range; its blocks are this loop's only once it has begun.
    // (No member can be a loop ahead: a sync() separates loops.)
    for (Backoff backoff; v.loop.load(std::memory_order_acquire) < loop; backoff.wait())
      if (failed()) return false;
    uint64_t range = v.range.load(std::memory_order_acquire);
    while (begin_of(range) < end_of(range)) {
      const int64_t middle = begin_of(range) + (end_of(range) - begin_of(range)) / 2;
      if (v.range.compare_exchange_weak(range, pack(begin_of(range), middle), std::memory_order_acq_rel)) {
        // Only m takes from the front of its own range, and it is not taking now.
        blocks_[m].range.store(pack(middle, end_of(range)), std::memory_order_release);
        return true;
      }
    }
  }
  return false;
}

void Team::fail(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!error_) error_ = std::move(error);
  }
  failed_.store(true, std::memory_order_release);
}

void run_team(int threads, void (*body)(void* context, TeamMember& member), void* context) {
  Team team;
  const auto member = [&](int index, int size) {
    TeamMember m(team, index, size);
    try {
      body(context, m);
    } catch (...) {
      team.fail(std::current_exception());
    }
  };
  if (threads <= 1 || omp_in_parallel()) {
    member(0, 1);
  } else {
#pragma omp parallel num_threads(std::min(threads, Team::kMaxMembers))
    member(omp_get_thread_num(), omp_get_num_threads());
  }
  if (team.error()) std::rethrow_exception(team.error());
}

}  // namespace lococo
