// Internal to kv/: the factories of the policies in the registry (one file
// each), and the slot-selection helpers they share.
#pragma once

#include <memory>

#include "kv/slot_cache.h"
#include "lococo/kv/cache.h"

namespace lococo {

std::unique_ptr<KvCache> make_full_cache(const ModelConfig& config, const CacheOptions& options);
std::unique_ptr<KvCache> make_streaming_cache(const ModelConfig& config, const CacheOptions& options);
std::unique_ptr<KvCache> make_h2o_cache(const ModelConfig& config, const CacheOptions& options);
std::unique_ptr<KvCache> make_tova_cache(const ModelConfig& config, const CacheOptions& options);
std::unique_ptr<KvCache> make_snapkv_cache(const ModelConfig& config, const CacheOptions& options);
std::unique_ptr<KvCache> make_lococo_hh_cache(const ModelConfig& config, const CacheOptions& options);
std::unique_ptr<KvCache> make_lococo_cache(const ModelConfig& config, const CacheOptions& options);

// Slot indices [H, k + w] in cache order: per row, the k best slots by
// `head_scores` ([H, L - w], the scores of all but the last w slots), then the
// last w slots L - w .. L - 1.
inline torch::Tensor top_k_then_recent(const torch::Tensor& head_scores, int64_t k, int64_t w) {
  const int64_t H = head_scores.size(0), head = head_scores.size(1);
  auto top = std::get<1>(head_scores.topk(k, /*dim=*/1));                       // [H, k]
  auto in_order = std::get<0>(top.sort(/*dim=*/1));                              // [H, k]
  auto recent = torch::arange(head, head + w, top.options()).expand({H, w});    // [H, w]
  return torch::cat({in_order, recent}, 1);                                      // [H, k + w]
}

}  // namespace lococo
