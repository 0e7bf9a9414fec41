// Admission control: slots, the queue, and the cache-byte budget shared by
// running requests and the prompt states idle slots keep.
#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "server/admission.h"

namespace lococo::server_detail {
namespace {

TEST(Admission, RequestsWaitForBytesAndIdleSlotsGiveUpTheirKeptStates) {
  std::vector<int> dropped;
  Admission a(/*parallel=*/2, /*queue=*/4, /*max_bytes=*/100, [&](int slot) { dropped.push_back(slot); });
  const auto first = a.enter({}, 60, nullptr);
  ASSERT_EQ(first.slot, 0);
  std::atomic<int> second_slot{-2};
  std::thread waiter([&] { second_slot = a.enter({}, 60, nullptr).slot; });  // 60 + 60 > 100: waits
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(second_slot, -2);
  EXPECT_EQ(a.busy_and_waiting(), std::make_pair(1, 1));
  a.leave(0, /*kept_bytes=*/30);
  waiter.join();
  EXPECT_EQ(second_slot, 0) << "the lowest free slot; its own kept state is the request's to reuse or replace";
  EXPECT_TRUE(dropped.empty());
  a.leave(0, 30);
  const auto big = a.enter({1}, 90, nullptr);  // prefers slot 1; 30 kept by slot 0 + 90 > 100: slot 0's state goes
  EXPECT_EQ(big.slot, 1);
  EXPECT_EQ(dropped, std::vector<int>{0});
  a.leave(1, 0);
}

TEST(Admission, FullQueueDrainAndDepartedClientsAreRefused) {
  Admission a(1, 1, 100, [](int) {});
  ASSERT_EQ(a.enter({}, 10, nullptr).slot, 0);
  std::atomic<bool> gone{false};
  std::atomic<int> refusal{-1};
  std::thread queued([&] { refusal = a.enter({}, 10, [&] { return gone.load(); }).refusal; });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(a.enter({}, 10, nullptr).refusal, Admission::kFull);  // the one queue place is taken
  gone = true;
  queued.join();
  EXPECT_EQ(refusal, Admission::kClientGone);
  std::thread draining([&] { refusal = a.enter({}, 10, nullptr).refusal; });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  a.drain();
  draining.join();
  EXPECT_EQ(refusal, Admission::kShuttingDown);
  EXPECT_EQ(a.enter({}, 10, nullptr).refusal, Admission::kShuttingDown);
  EXPECT_FALSE(a.set_kept(0, 5)) << "slot 0 is busy";
  a.leave(0, 0);
  EXPECT_TRUE(a.set_kept(0, 5));
  EXPECT_FALSE(a.set_kept(0, 101));
}

}  // namespace
}  // namespace lococo::server_detail
