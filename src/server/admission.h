// Internal to the server: admission control. `parallel` slots generate at
// once, a bounded queue waits in front of them, and the KV-cache bytes of
// the requests in the slots plus the prompt states the idle slots keep stay
// within one budget (--max-cache-bytes).
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <numeric>
#include <utility>
#include <vector>

namespace lococo::server_detail {

class Admission {
 public:
  // Why enter() gave no slot.
  enum Refusal { kNone, kFull, kShuttingDown, kClientGone };
  struct Entry {
    int slot = -1;           // in [0, parallel) when admitted
    Refusal refusal = kNone;
  };

  // `drop_kept(slot)` forgets an idle slot's kept prompt state when a request
  // needs its bytes.
  Admission(int parallel, int queue, int64_t max_bytes, std::function<void(int)> drop_kept)
      : parallel_(parallel), queue_(queue), max_bytes_(max_bytes), drop_kept_(std::move(drop_kept)) {}

  // Waits for a slot whose request may hold `bytes` of cache (bytes <=
  // max_bytes(): the caller checks) and returns it: the first free one of
  // `preferred` (slots whose kept prompt state the request can reuse), else
  // the lowest free one. Refused at once when the slots and the queue are
  // full, and while waiting when the server drains or `client_gone()` says
  // the client left (asked every kPollInterval).
  Entry enter(const std::vector<int>& preferred, int64_t bytes, const std::function<bool()>& client_gone) {
    std::unique_lock<std::mutex> lock(mu_);
    if (draining_) return {-1, kShuttingDown};
    if (!fits_now(bytes) && waiting_ >= queue_) return {-1, kFull};
    ++waiting_;
    while (!draining_ && !fits_now(bytes)) {
      if (client_gone && client_gone()) {
        --waiting_;
        return {-1, kClientGone};
      }
      cv_.wait_for(lock, kPollInterval);
    }
    --waiting_;
    if (draining_) {
      cv_.notify_all();
      return {-1, kShuttingDown};
    }
    int slot = -1;
    for (const int p : preferred)
      if (p >= 0 && p < parallel_ && !busy_[p]) {
        slot = p;
        break;
      }
    if (slot < 0) slot = static_cast<int>(std::find(busy_.begin(), busy_.end(), false) - busy_.begin());
    make_room(bytes, slot);
    busy_[slot] = true;
    held_[slot] = bytes;
    return {slot, kNone};
  }
  // The request in `slot` ended; the slot now keeps a prompt state of `kept_bytes`.
  void leave(int slot, int64_t kept_bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_.at(slot) = false;
      held_[slot] = kept_bytes;
    }
    cv_.notify_all();
  }
  // An idle slot's kept state changed outside a request (slot restore or
  // erase); false when the slot is busy or the bytes do not fit.
  bool set_kept(int slot, int64_t kept_bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (busy_.at(slot) || in_use() - held_[slot] + kept_bytes > max_bytes_) return false;
    held_[slot] = kept_bytes;
    return true;
  }
  // Queued requests are refused and no new ones are admitted; running ones finish.
  void drain() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      draining_ = true;
    }
    cv_.notify_all();
  }
  int64_t max_bytes() const { return max_bytes_; }
  std::pair<int, int> busy_and_waiting() {
    std::lock_guard<std::mutex> lock(mu_);
    return {busy_count(), waiting_};
  }
  std::vector<bool> busy_slots() {
    std::lock_guard<std::mutex> lock(mu_);
    return busy_;
  }

 private:
  static constexpr auto kPollInterval = std::chrono::milliseconds(100);

  // Under mu_: a slot is free and `bytes` fit once idle slots' kept states go.
  bool fits_now(int64_t bytes) const {
    if (busy_count() >= parallel_) return false;
    int64_t running = 0;
    for (int i = 0; i < parallel_; ++i)
      if (busy_[i]) running += held_[i];
    return running + bytes <= max_bytes_;
  }
  // Under mu_: forgets idle slots' kept states until `bytes` fit beside what
  // is held. The request's own slot keeps its state (the request may reuse
  // it, then replaces it: `bytes` counts that).
  void make_room(int64_t bytes, int slot) {
    held_[slot] = 0;
    for (int i = 0; i < parallel_ && in_use() + bytes > max_bytes_; ++i)
      if (!busy_[i] && held_[i] > 0) {
        held_[i] = 0;
        drop_kept_(i);
      }
  }
  int64_t in_use() const { return std::accumulate(held_.begin(), held_.end(), int64_t{0}); }
  int busy_count() const { return static_cast<int>(std::count(busy_.begin(), busy_.end(), true)); }

  std::mutex mu_;
  std::condition_variable cv_;
  const int parallel_, queue_;
  const int64_t max_bytes_;
  const std::function<void(int)> drop_kept_;
  std::vector<bool> busy_ = std::vector<bool>(static_cast<size_t>(std::max(parallel_, 0)), false);   // [parallel]
  std::vector<int64_t> held_ = std::vector<int64_t>(static_cast<size_t>(std::max(parallel_, 0)), 0);  // [parallel] bytes
  int waiting_ = 0;
  bool draining_ = false;
};

// A held slot, released when the last copy goes (the streaming provider owns
// one, so a client that disconnects early still frees it); `kept_bytes()`
// then tells the bytes of the prompt state the slot keeps.
struct SlotTicket {
  SlotTicket(Admission& a, int slot, std::function<int64_t()> kept_bytes)
      : admission(a), slot(slot), kept_bytes(std::move(kept_bytes)) {}
  ~SlotTicket() { admission.leave(slot, kept_bytes()); }
  Admission& admission;
  const int slot;
  const std::function<int64_t()> kept_bytes;
};

}  // namespace lococo::server_detail
