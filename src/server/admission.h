// Internal to the server: admission control, `parallel` slots and a bounded
// queue in front of them.
#pragma once

#include <condition_variable>
#include <mutex>
#include <utility>

namespace lococo::server_detail {

class Admission {
 public:
  Admission(int parallel, int queue) : parallel_(parallel), queue_(queue) {}

  // Waits for a slot; false (at once) when the slots and the queue are full.
  bool enter() {
    std::unique_lock<std::mutex> lock(mu_);
    if (busy_ >= parallel_ && waiting_ >= queue_) return false;
    ++waiting_;
    cv_.wait(lock, [&] { return busy_ < parallel_; });
    --waiting_;
    ++busy_;
    return true;
  }
  void leave() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --busy_;
    }
    cv_.notify_one();
  }
  std::pair<int, int> busy_and_waiting() {
    std::lock_guard<std::mutex> lock(mu_);
    return {busy_, waiting_};
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  const int parallel_, queue_;
  int busy_ = 0, waiting_ = 0;
};

// A held slot, released when the last copy goes (the streaming provider owns
// one, so a client that disconnects early still frees it).
struct SlotTicket {
  explicit SlotTicket(Admission& a) : admission(a) {}
  ~SlotTicket() { admission.leave(); }
  Admission& admission;
};

}  // namespace lococo::server_detail
