// Host memory for the weights decoding streams once per token.
//
// Generating a token reads every weight matrix once. With 4 KiB pages that is
// a TLB miss every 4 KiB (about a million per token for a 1B model in fp32),
// and the page walks take a share of the memory bandwidth the weights need.
// Backed by 2 MiB transparent huge pages instead (requested with madvise,
// which Debian's default THP setting honours), the page walks all but vanish
// and the weights stream measurably faster (docs/DESIGN.md section 8). When
// the kernel has no huge pages to give, the memory simply stays in normal pages.
#pragma once

#include <torch/torch.h>

namespace lococo {

// An uninitialised contiguous CPU tensor; from 2 MiB up it is 2 MiB-aligned
// and advised to use huge pages (smaller ones come from the usual allocator).
torch::Tensor empty_weight_tensor(at::IntArrayRef sizes, torch::Dtype dtype);

}  // namespace lococo
