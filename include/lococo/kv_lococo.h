// The lococo and lococo-hh cache policies (DESIGN.md section 3), public so that
// training code can build a cache around a compressor it owns and reach the
// compressor's parameters through the cache.
#pragma once

#include <memory>
#include <string>

#include "lococo/compressor.h"
#include "lococo/kv_cache.h"

namespace lococo {

// Scores are the column sums of the latest chunk's attention (overwritten each
// chunk, not accumulated). A compression keeps the heavy hitters and fuses the
// rest with the compressor; with no compressor it is lococo-hh: the same split
// with lambda = 0 and no convolution, i.e. [heavy hitters; top-m of the rest].
//
// In training (grad mode on, compressor parameters requiring grad) the fused
// slots carry autograd history into the next chunk's attention (SlotCache::replace_slots).
class LococoCache final : public BoundedCache {
 public:
  // compressor: null for lococo-hh. Throws std::invalid_argument for bad options
  // or a compressor made for another model shape or cache.
  LococoCache(const ModelConfig& config, const CacheOptions& options, std::shared_ptr<LococoCompressor> compressor);

  const std::shared_ptr<LococoCompressor>& compressor() const { return compressor_; }

  AttentionStatsRequest stats_request(int layer) const override;
  void observe(int layer, const AttentionStats& stats) override;
  std::string describe() const override;

 protected:
  void compress(int layer) override;

 private:
  void select_heavy_hitters(int layer);  // lococo-hh
  void fuse(int layer);                  // lococo

  const CompressorOptions shape_;  // M, r, w and the derived keep / m
  std::shared_ptr<LococoCompressor> compressor_;
};

}  // namespace lococo
