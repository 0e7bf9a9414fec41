// Internal to the engine: the lococo and lococo-hh cache policies
// (docs/DESIGN.md section 4), visible to the tests that look at their slots.
#pragma once

#include <memory>
#include <string>

#include "kv/slot_cache.h"
#include "lococo/kv/compressor.h"

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

  std::string describe() const override;
  AttentionStatsRequest stats_request(int layer) const override;
  void observe(int layer, const AttentionStats& stats) override;

 protected:
  void compress(int layer) override;

 private:
  // The order of the M compressed slots, from [heavy | window | fused]: the
  // identity, or the window moved last (options.lococo.window_last). [Hkv, M].
  torch::Tensor compressed_order(int64_t heads) const;
  bool learned_retention() const;        // the compressor scores tokens (not attention)
  // Learned retention: the attention sinks' score, above every learned one
  // (logs of attention, about -7 to 8), and the rank offset of long-term slots.
  static constexpr double kSinkScore = 1e4, kLongTermRank = 1e3;
  // Learned retention ranks layer i's stored slots for a compression: sinks,
  // then long-term slots by score, then the rest by score less aging
  // (LococoOptions; retention-only compressors: a fusing one ranks by score). [Hkv, L]
  torch::Tensor retention_rank(int i) const;
  void select_heavy_hitters(int layer);  // lococo-hh
  void fuse(int layer);                  // lococo

  const CompressorOptions shape_;  // M, r, w and the derived keep / m
  std::shared_ptr<LococoCompressor> compressor_;
};

}  // namespace lococo
