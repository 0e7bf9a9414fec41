// The lococo cache policy around a compressor the caller owns (docs/DESIGN.md
// section 4): what training code needs to build a cache whose compressions its
// optimiser trains. Everything else builds caches with make_cache().
#pragma once

#include <memory>

#include "lococo/kv/cache.h"
#include "lococo/kv/compressor.h"

namespace lococo {

// A lococo cache fusing with `compressor` (null: lococo-hh). Throws
// std::invalid_argument for bad options or a compressor made for another model
// shape or cache. In training (grad mode on, compressor parameters requiring
// grad) the fused slots carry autograd history into the next chunk's attention.
std::unique_ptr<KvCache> make_lococo_cache(const ModelConfig& config, const CacheOptions& options,
                                           std::shared_ptr<LococoCompressor> compressor);

}  // namespace lococo
