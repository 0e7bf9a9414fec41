// Data-parallel training over libtorch's c10d: a TCPStore on rank 0 for the
// rendezvous and a Gloo process group for the collectives (CPU, TCP), so ranks
// can be processes on one machine or on several.
//
// The protocol every training command follows (pretrain, train-compressor, tune):
//   1. every rank builds the same model and trainable tensors, then rank 0's
//      values are broadcast (identical initialisation however they were made);
//   2. every rank draws the same global batch from the same seeded RNG and
//      trains on its own slice of it (data sharded by rank);
//   3. after backward, gradients are averaged over ranks (all-reduce in
//      buckets of flattened tensors) before clipping and the optimiser step, so
//      every rank applies the same update;
//   4. only rank 0 writes checkpoints, metrics and outputs.
// A peer that dies or stops answering makes the collectives fail after
// `timeout_seconds`; the error names the rank and the operation. While rank 0
// validates or writes a checkpoint the others wait at wait_for_main(), whose
// timeout is `main_timeout_seconds`.
//
// Addresses: every rank's Gloo transport binds `host` (default: this
// machine's address on the route to the master); rank 0's rendezvous store
// listens on the master's address only. `lococo launch` passes `store_dir`
// instead: the ranks meet through a file store in a private directory and no
// store port is opened at all.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace c10d {
class Store;
}

namespace lococo {

struct DistOptions {
  int world_size = 1;                      // processes training together (1 = no distribution)
  int rank = 0;                            // this process, 0 .. world_size - 1
  std::string master = "127.0.0.1:29500";  // host:port where rank 0 runs the rendezvous store
  double timeout_seconds = 120;            // a silent peer fails the run after this long
  double main_timeout_seconds = 6 * 3600;  // the others wait this long for rank 0's validation and checkpoints
  std::string host;                        // this rank's address for the collectives ("" = the route to the master)
  std::string store_dir;                   // non-empty: rendezvous through a file store here (one machine)
  int64_t bucket_bytes = 8 << 20;          // gradients are all-reduced in buckets of about this size
};

class Distributed {
 public:
  // World size 1: every operation is a no-op. Otherwise blocks until all ranks
  // have joined (or the timeout passes: std::runtime_error).
  explicit Distributed(const DistOptions& options = {});
  ~Distributed();

  bool active() const { return options_.world_size > 1; }
  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  bool is_main() const { return options_.rank == 0; }

  // Rank 0's values overwrite everyone's, in place.
  void broadcast(const std::vector<torch::Tensor>& tensors);
  // Each tensor's .grad() becomes the mean over ranks (undefined grads count as zero).
  void average_gradients(const std::vector<torch::Tensor>& params);
  // Every rank waits here until rank 0 arrives (after its validation or
  // checkpoint), for up to main_timeout_seconds.
  void wait_for_main(const char* what);
  // Throws on every rank unless `value` is the same on all of them (a resumed
  // step: a rank that resumed elsewhere would train out of step or hang).
  void expect_same(int64_t value, const std::string& what);
  // Mean of a number over ranks (losses for logging).
  double mean(double value);
  // True on every rank when it is true on any (a stop request, an error).
  bool any(bool flag);
  // Seconds spent in collectives so far (benchmarks).
  double comm_seconds() const { return comm_seconds_; }

  // The half-open slice [begin, end) of `global` items this rank trains on;
  // throws std::invalid_argument unless `global` divides evenly.
  std::pair<int64_t, int64_t> shard(int64_t global, const std::string& what) const;

 private:
  c10::intrusive_ptr<c10d::Store> tcp_store(const std::string& host, uint16_t port,
                                            std::chrono::milliseconds timeout) const;
  c10::intrusive_ptr<c10d::Store> file_store(std::chrono::milliseconds timeout) const;
  struct Impl;
  DistOptions options_;
  std::unique_ptr<Impl> impl_;
  double comm_seconds_ = 0;
  int64_t main_waits_ = 0;  // wait_for_main() calls so far (the store key of the next)
};

}  // namespace lococo
