// full: never evicts; grows by doubling (the quality ceiling).
#include "kv/policies.h"
#include "kv/slot_cache.h"

namespace lococo {

namespace {

// Nothing is ever evicted, so slot i holds token i and the two position
// schemes coincide; keys are stored rotated, which spares `Cache` mode from
// rotating every stored key again for each chunk.
CacheOptions absolute(CacheOptions o) {
  o.positions = PositionMode::Absolute;
  return o;
}

class FullCache final : public SlotCache {
 public:
  FullCache(const ModelConfig& c, const CacheOptions& o) : SlotCache(c, absolute(o), o.chunk) {}
  std::string describe() const override { return "full"; }

 protected:
  void prepare(int, int64_t) override {}
  AttentionStatsRequest stats_request(int) const override { return {}; }
  void observe(int, const AttentionStats&) override {}
};

}  // namespace

std::unique_ptr<KvCache> make_full_cache(const ModelConfig& config, const CacheOptions& options) {
  return std::make_unique<FullCache>(config, options);
}

}  // namespace lococo
