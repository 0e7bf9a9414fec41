// The thread team decode_step runs each token in: every block of a loop is
// done exactly once whatever the team size, a slow member's blocks are taken
// over by the others, sync() publishes what members wrote, and an exception
// on any member (leader step or parallel work) comes out of run_team without
// leaving the others waiting.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/thread_team.h"

namespace lococo {
namespace {

TEST(ThreadTeam, EveryBlockIsDoneOnceForAnyTeamSize) {
  for (int threads : {1, 2, 3, 5}) {
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      SCOPED_TRACE(testing::Message() << threads << " threads, " << n << " blocks");
      std::vector<std::atomic<int>> done(static_cast<size_t>(n) * 3);
      run_team(threads, [&](TeamMember& t) {
        for (int loop = 0; loop < 3; ++loop) {  // three loops with barriers between them
          t.for_each_block(n, [&](int64_t b) { done[static_cast<size_t>(loop * n + b)]++; });
          if (!t.sync()) return;
        }
      });
      for (size_t i = 0; i < done.size(); ++i) ASSERT_EQ(done[i].load(), 1) << "block " << i;
    }
  }
}

TEST(ThreadTeam, FastMembersTakeOverASlowMembersBlocks) {
  constexpr int64_t kBlocks = 40;
  std::vector<int> owner(kBlocks, -1);
  int size = 0;
  run_team(2, [&](TeamMember& t) {
    if (t.leader()) size = t.size();
    t.for_each_block(kBlocks, [&](int64_t b) {
      owner[static_cast<size_t>(b)] = t.index();
      if (t.index() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // member 1 is slow
    });
  });
  if (size < 2) GTEST_SKIP() << "OpenMP gave one thread";
  int64_t by_leader = 0;
  for (int o : owner) {
    ASSERT_GE(o, 0);
    by_leader += o == 0;
  }
  // Its own half is 20 blocks; it takes most of member 1's 20 as well.
  EXPECT_GT(by_leader, 30);
}

TEST(ThreadTeam, SyncPublishesWhatEveryMemberWrote) {
  std::vector<int64_t> slots(4, 0);
  std::atomic<int> wrong{0}, rounds_checked{0};
  run_team(4, [&](TeamMember& t) {
    const int64_t members_sum = t.size() * (t.size() + 1) / 2;  // 1 + 2 + ... + size
    for (int64_t round = 1; round <= 200; ++round) {
      slots[static_cast<size_t>(t.index())] = round * (t.index() + 1);
      if (!t.sync()) return;
      int64_t sum = 0;
      for (int m = 0; m < t.size(); ++m) sum += slots[static_cast<size_t>(m)];
      if (sum != round * members_sum) wrong++;
      rounds_checked++;
      if (!t.sync()) return;  // nobody writes the next round before all have read
    }
  });
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GE(rounds_checked.load(), 200);
}

TEST(ThreadTeam, LeaderStepExceptionReachesTheCaller) {
  std::atomic<int> after{0};
  EXPECT_THROW(run_team(3, [&](TeamMember& t) {
                 if (!t.leader_then_sync([] { throw std::runtime_error("cache refused"); })) return;
                 after++;  // nobody gets here
               }),
               std::runtime_error);
  EXPECT_EQ(after.load(), 0);
}

TEST(ThreadTeam, MemberExceptionReleasesTheOthers) {
  try {
    run_team(3, [&](TeamMember& t) {
      if (t.index() == t.size() - 1) throw std::invalid_argument("bad block");
      while (t.sync()) {  // would wait forever for the member that threw
      }
    });
    // One thread: the only member threw before its first sync().
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "bad block");
  }
}

}  // namespace
}  // namespace lococo
