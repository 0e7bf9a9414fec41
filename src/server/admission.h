// Internal to the server: admission control, `parallel` slots and a bounded
// queue in front of them.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

namespace lococo::server_detail {

class Admission {
 public:
  Admission(int parallel, int queue) : parallel_(parallel), queue_(queue) {}

  // Waits for a slot and returns its id in [0, parallel): the first free one
  // of `preferred` (slots whose kept prompt state the request can reuse),
  // else the lowest free one; -1 (at once) when the slots and the queue are full.
  int enter(const std::vector<int>& preferred = {}) {
    std::unique_lock<std::mutex> lock(mu_);
    if (busy_count() >= parallel_ && waiting_ >= queue_) return -1;
    ++waiting_;
    cv_.wait(lock, [&] { return busy_count() < parallel_; });
    --waiting_;
    for (const int p : preferred)
      if (p >= 0 && p < parallel_ && !busy_[p]) return take(p);
    return take(static_cast<int>(std::find(busy_.begin(), busy_.end(), false) - busy_.begin()));
  }
  void leave(int slot) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_.at(slot) = false;
    }
    cv_.notify_one();
  }
  std::pair<int, int> busy_and_waiting() {
    std::lock_guard<std::mutex> lock(mu_);
    return {busy_count(), waiting_};
  }
  std::vector<bool> busy_slots() {
    std::lock_guard<std::mutex> lock(mu_);
    return busy_;
  }

 private:
  int take(int slot) {  // under mu_
    busy_[slot] = true;
    return slot;
  }
  int busy_count() const { return static_cast<int>(std::count(busy_.begin(), busy_.end(), true)); }
  std::mutex mu_;
  std::condition_variable cv_;
  const int parallel_, queue_;
  std::vector<bool> busy_ = std::vector<bool>(static_cast<size_t>(std::max(parallel_, 0)), false);  // [parallel]
  int waiting_ = 0;
};

// A held slot, released when the last copy goes (the streaming provider owns
// one, so a client that disconnects early still frees it).
struct SlotTicket {
  SlotTicket(Admission& a, int slot) : admission(a), slot(slot) {}
  ~SlotTicket() { admission.leave(slot); }
  Admission& admission;
  const int slot;
};

}  // namespace lococo::server_detail
