// What the machine allows, measured beside the work: read bandwidth (decode is
// bound by bytes read per token) and GEMM rates (prefill is bound by flops).
// A shared machine's rates move from minute to minute, so run_bench measures
// them again beside every point (docs/DESIGN.md section 8).
#pragma once

#include <torch/torch.h>

namespace lococo {

struct MachineLimits {
  double bandwidth_gb_s = 0;  // read bandwidth of a large (256 MiB) reduction; in run_bench the best of all
                              // measurements in the run (at the start and beside each point)
  double gemm_gflop_s = 0;    // a 2048^3 GEMM in `dtype`; in run_bench the best of the run (start, beside each prompt)
  double attention_gflop_s = 0;               // the same in `attention_dtype`
  torch::Dtype attention_dtype = torch::kFloat32;  // the KV cache's: attention computes in it
  torch::Dtype dtype = torch::kFloat32;
};
// The machine's read bandwidth now: a reduction over 256 MiB in weight memory
// (host_memory.h), allocated once. A shared machine's bandwidth moves from
// minute to minute, so run_bench
// reads it between generated tokens (the best of two reads each time: one
// read can land on a burst of another tenant's traffic) and holds each token
// to the better of the reads just before and after it.
class ReadProbe {
 public:
  ReadProbe();
  double gb_s();                // one read
  double best_gb_s(int reps);   // the best of `reps` reads
 private:
  torch::Tensor buffer_;  // [64, 2^20] fp32
};
// ReadProbe().best_gb_s(5).
double measure_read_bandwidth();
// Takes a second or two; uses the current intra-op thread count.
MachineLimits measure_machine_limits(torch::Dtype dtype = torch::kFloat32, torch::Dtype attention_dtype = torch::kFloat32);
// GFLOP/s of a 2048^3 GEMM in `dtype`, measured now (best of 3).
double gemm_gflop_s(torch::Dtype dtype);

}  // namespace lococo
