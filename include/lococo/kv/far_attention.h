// The training targets of learned retention (lococo/kv/compressor.h): which
// tokens the model reads from far away when nothing is evicted.
#pragma once

#include <cstdint>
#include <memory>

#include "lococo/kv/cache.h"

namespace lococo {

// A cache that keeps every token, like `full`, with keys stored before RoPE
// (stored().keys is what learned retention reads) and, as each slot's score
// (stored_scores), the most attention the slot has received from one query at
// least `far` tokens after it, summed over the query heads of its KV head: in
// [0, G], 0 until such a query has come. Throws std::invalid_argument for
// far < 1.
std::unique_ptr<KvCache> make_far_attention_cache(const ModelConfig& config, const CacheOptions& options,
                                                  int64_t far);

}  // namespace lococo
