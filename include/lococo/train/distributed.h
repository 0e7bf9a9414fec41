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
// `timeout_seconds`; the error names the rank and the operation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace lococo {

struct DistOptions {
  int world_size = 1;                      // processes training together (1 = no distribution)
  int rank = 0;                            // this process, 0 .. world_size - 1
  std::string master = "127.0.0.1:29500";  // host:port where rank 0 runs the rendezvous store
  double timeout_seconds = 120;            // a silent peer fails the run after this long
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
  struct Impl;
  DistOptions options_;
  std::unique_ptr<Impl> impl_;
  double comm_seconds_ = 0;
};

}  // namespace lococo
