// A team of the intra-op threads that runs one function together, with
// barriers between the steps that depend on each other.
//
// Decoding a token is ~150 small parallel steps (every weight matrix, the
// attention of every layer) with a little serial work between them. Run as one
// at::parallel_for per step, each step is an OpenMP parallel region, and
// Debian's libgomp puts idle threads to sleep between regions, so every step
// pays a futex sleep and wake-up per thread; keeping the threads spinning
// decodes markedly faster (docs/DESIGN.md section 8). libgomp's spin count can only be set by environment variables that it
// reads at process start, so decode_step() instead enters one parallel region
// per token and separates its steps with the barrier below, which spins (and
// then yields, so an oversubscribed machine still makes progress) and never
// sleeps in the kernel. The barrier is hand-written because OpenMP's own
// barrier waits the same way its idle threads do.
//
// The work of a parallel step is a range of blocks. Each member takes the
// blocks of its own contiguous share in order (one sequential stream through
// memory, the prefetchers' best case) and, when done, steals the back half of
// what another member has left, which it then works through in order as its
// own (and which others may steal from in turn). A member claims its blocks a
// share at a time (a quarter of what it has left, at least one): each claim is
// a locked instruction, which on x86 waits for every load in flight, so one
// claim per block would stall the stream at every block, while shrinking
// shares keep the tail fine enough for stealing. On a shared machine one core
// often streams memory slower than the other: with fixed halves the faster
// one waits at every barrier, and handing out every block from one counter
// interleaves the two streams, which is slower still.
//
//   run_team(threads, [&](TeamMember& t) {
//     t.for_each_block(blocks, [&](int64_t b) { ... });  // every member works
//     if (!t.sync()) return;                               // wait for all of them
//     if (!t.leader_then_sync([&] { ... })) return;        // serial step (member 0)
//   });
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <type_traits>
#include <utility>

namespace lococo {

// The state the members of one run share: the barrier and the first error.
class Team {
 public:
  // Waits until `size` members have called it; false once the team failed
  // (a member threw), in which case it returns without waiting.
  bool arrive_and_wait(int size);
  static constexpr int kMaxMembers = 64;  // run_team uses at most this many threads

  // Member m's blocks of its loop number `loop` (1, 2, ...) are [begin, end).
  void set_blocks(int m, int64_t loop, int64_t begin, int64_t end);
  // The next blocks [first, last) of member m's own range, a quarter of what
  // it has left (at least one); first == last when none are left.
  std::pair<int64_t, int64_t> take_own(int m);
  // Moves the back half of another member's remaining range in loop `loop`
  // into member m's own range; false when none is left. Waits for members
  // that have not begun that loop yet.
  bool steal(int m, int size, int64_t loop);
  void fail(std::exception_ptr error);
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  std::exception_ptr error() const { return error_; }

 private:
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
  // Per member, its remaining range packed as (end << 32) | begin, so that
  // taking from the front (fetch_add) and stealing from the back (CAS) race
  // safely on one word. Each on its own cache line.
  struct alignas(64) Blocks {
    std::atomic<uint64_t> range{0};
    std::atomic<int64_t> loop{0};  // the loop `range` belongs to
  };
  Blocks blocks_[kMaxMembers];
  std::atomic<bool> failed_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

// One thread's view of a team run.
class TeamMember {
 public:
  TeamMember(Team& team, int index, int size) : team_(&team), index_(index), size_(size) {}

  int index() const { return index_; }  // 0 .. size() - 1
  int size() const { return size_; }
  bool leader() const { return index_ == 0; }

  // Calls f(b) for blocks b in [0, n) that this member takes; together the
  // members call it once for every block (n < 2^31). A sync() must come
  // between two loops.
  template <class F>
  void for_each_block(int64_t n, F&& f) {
    team_->set_blocks(index_, ++loops_, n * index_ / size_, n * (index_ + 1) / size_);
    do {
      for (auto share = team_->take_own(index_); share.first < share.second; share = team_->take_own(index_))
        for (int64_t b = share.first; b < share.second; ++b) f(b);
    } while (team_->steal(index_, size_, loops_));
  }

  // Waits for every member; false when the team failed (return then).
  bool sync() { return team_->arrive_and_wait(size_); }

  // Runs f on the leader alone, then sync(). An exception from f fails the
  // team (run_team rethrows it) and every member gets false.
  template <class F>
  bool leader_then_sync(F&& f) {
    if (leader()) try {
        f();
      } catch (...) {
        team_->fail(std::current_exception());
      }
    return sync();
  }

 private:
  Team* team_;
  int index_, size_;
  int64_t loops_ = 0;  // for_each_block loops begun
};

// The untyped form of run_team (a callable and its context), so that a run
// allocates nothing (std::function would, for a lambda of many captures).
void run_team(int threads, void (*body)(void* context, TeamMember& member), void* context);

// Runs body(TeamMember&) on `threads` threads at once (the caller is member 0;
// one when called inside another parallel region) and returns when all have
// finished. The first exception any member throws is rethrown here.
template <class Body>
void run_team(int threads, Body&& body) {
  using B = std::remove_reference_t<Body>;
  run_team(threads, [](void* b, TeamMember& m) { (*static_cast<B*>(b))(m); },
           const_cast<void*>(static_cast<const void*>(&body)));
}

}  // namespace lococo
