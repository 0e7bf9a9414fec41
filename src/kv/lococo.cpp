#include "lococo/kv/lococo.h"

#include "kv/lococo_cache.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "kv/policies.h"

namespace lococo {

namespace {

// The cache's own view of M, r and w, validated (std::invalid_argument names the flag).
CompressorOptions checked_shape(const ModelConfig& config, const CacheOptions& options,
                                const LococoCompressor* compressor) {
  auto shape = CompressorOptions::from(config, options);
  shape.validate();
  const double decay = options.lococo.score_decay;
  if (!(decay >= 0 && decay <= 1))
    throw std::invalid_argument(fmt::format("--score-decay must be in [0, 1] (got {})", decay));
  const double aging = options.lococo.retention_decay;
  if (!(aging >= 0 && aging < 1e6))
    throw std::invalid_argument(fmt::format("--retention-decay must be in [0, 1e6) (got {})", aging));
  if (!std::isfinite(options.lococo.retention_protect) || options.lococo.retention_long_term < 0)
    throw std::invalid_argument("--retention-protect must be finite and --retention-long-term not negative");
  if (compressor) {
    const std::string why = compressor->options().mismatch(config, options);
    if (!why.empty()) throw std::invalid_argument("lococo: the compressor does not fit this model and cache (" + why + ")");
    // Retention reads keys before RoPE, which only `cache` positions store.
    if (compressor->options().learned_retention() && options.positions != PositionMode::Cache)
      throw std::invalid_argument("lococo: a compressor with learned retention needs --positions cache");
    // A retention-only file fits any budget (mismatch()), as long as its sinks fit the heavy slots.
    const int64_t sinks = compressor->options().retention_sinks, heavy = shape.kept() - shape.local_window;
    if (compressor->options().learned_retention() && sinks > heavy)
      throw std::invalid_argument(fmt::format("lococo: the compressor keeps {} sink tokens, more than the {} heavy "
                                              "slots of --budget {} less --local-window {}", sinks, heavy,
                                              options.budget, shape.local_window));
  }
  return shape;
}

}  // namespace

LococoCache::LococoCache(const ModelConfig& config, const CacheOptions& options,
                         std::shared_ptr<LococoCompressor> compressor)
    : BoundedCache(config, options),
      shape_(checked_shape(config, options, compressor.get())),
      compressor_(std::move(compressor)) {}

bool LococoCache::learned_retention() const { return compressor_ && compressor_->options().learned_retention(); }

AttentionStatsRequest LococoCache::stats_request(int) const {
  // observe() runs only when statistics were asked for, so learned retention
  // asks too (for the cheapest kind) to score each chunk as it arrives.
  AttentionStatsRequest r;
  r.column_sums = true;
  return r;
}

void LococoCache::observe(int i, const AttentionStats& stats) {
  torch::NoGradGuard no_grad;
  auto& l = layer(i);
  if (learned_retention()) {
    // Each token is scored once, as it arrives; stored slots keep their scores.
    const int64_t n = chunk_tokens(), first = l.len - n;
    auto fresh = l.scores.narrow(1, first, n);
    const auto out = compressor_->layer(i).retention_outputs(l.k.narrow(1, first, n), l.v.narrow(1, first, n));
    fresh.copy_(out.copy.defined() ? copy_aware_scores(out.scores, out.copy, options_.lococo.retention_protect)
                                   : out.scores);
    // The stream's first tokens (attention sinks) outrank every learned score.
    const int64_t sinks = compressor_->options().retention_sinks - tokens_seen();
    if (sinks > 0) fresh.narrow(1, 0, std::min(sinks, n)).fill_(kSinkScore);
    return;
  }
  TORCH_CHECK(stats.column_sums.defined() && stats.column_sums.size(1) == l.len, "lococo: column sums [Hkv, S] expected");
  // The reference overwrites (decay 0): slots are ranked by the latest chunk's
  // attention only; a decay > 0 keeps a share of what earlier chunks gave them.
  auto scores = l.scores.narrow(1, 0, l.len);
  const double decay = options_.lococo.score_decay;
  if (decay == 0)
    scores.copy_(stats.column_sums);
  else
    scores.mul_(decay).add_(stats.column_sums);
}

torch::Tensor LococoCache::retention_rank(int i) const {
  const auto& l = layer(i);
  const auto& o = options_.lococo;
  const auto scores = l.scores.narrow(1, 0, l.len);                                            // [Hkv, L]
  const auto sink = scores >= kSinkScore / 2;                                                  // [Hkv, L]
  const auto age = (tokens_seen() - l.positions.narrow(1, 0, l.len)).to(scores.scalar_type());  // [Hkv, L]
  auto rank = scores - o.retention_decay / 1000 * age;
  if (o.retention_long_term > 0) {
    const auto candidate = (scores >= o.retention_protect) & sink.logical_not();
    const auto best = std::get<1>(torch::where(candidate, scores, -std::numeric_limits<float>::infinity())
                                      .topk(std::min(o.retention_long_term, l.len), 1));  // [Hkv, P]
    const auto long_term = torch::zeros_like(candidate).scatter_(1, best, true) & candidate;
    rank = torch::where(long_term, scores + kLongTermRank, rank);
  }
  return torch::where(sink, scores, rank);
}

std::string LococoCache::describe() const {
  const auto& o = options_.lococo;
  return fmt::format("{}(M={},b={},r={},w={}{})", compressor_ ? "lococo" : "lococo-hh", options_.budget,
                     options_.buffer, o.keep_rate, o.local_window,
                     (o.score_decay != 0 ? fmt::format(",decay={}", o.score_decay) : std::string()) +
                         (learned_retention() && o.retention_decay != 0
                              ? fmt::format(",retention-decay={}", o.retention_decay) : std::string()) +
                         (learned_retention() && o.retention_long_term > 0
                              ? fmt::format(",long-term={}(>={})", o.retention_long_term, o.retention_protect)
                              : std::string()) +
                         (o.window_last ? ",window-last" : "") + (learned_retention() ? ",learned-retention" : ""));
}

void LococoCache::compress(int i) {
  // Without fused slots (r = 1) the compressor only scores (learned
  // retention): the split is the cache's own M and w, which need not be the file's.
  if (compressor_ && shape_.fused() > 0)
    fuse(i);
  else
    select_heavy_hitters(i);
}

torch::Tensor LococoCache::compressed_order(int64_t heads) const {
  const int64_t M = shape_.budget, keep = shape_.kept(), w = shape_.local_window;
  auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(options_.device);
  if (!options_.lococo.window_last || w == 0) return torch::arange(M, i64).expand({heads, M});
  // [heavy | window | fused] -> [heavy | fused | window]
  auto order = torch::cat({torch::arange(keep - w, i64), torch::arange(keep, M, i64), torch::arange(keep - w, keep, i64)});
  return order.expand({heads, M});  // [Hkv, M]
}

void LococoCache::select_heavy_hitters(int i) {
  const auto& l = layer(i);
  auto ranking = learned_retention() ? retention_rank(i) : l.scores.narrow(1, 0, l.len);  // [Hkv, L]
  auto parts = partition_slots(ranking, shape_.kept(), shape_.local_window, shape_.fused());
  // W = R: the fused slots are copies of the top-m of the rest, in cache order.
  auto kept = torch::cat({parts.heavy, parts.rest.gather(1, parts.chosen)}, 1);  // [Hkv, M]
  keep_slots(i, kept.gather(1, compressed_order(kept.size(0))));
}

void LococoCache::fuse(int i) {
  const auto& l = layer(i);
  const int64_t L = l.len, H = l.k.size(0), m = shape_.fused();
  const KeysValues in = compression_input(i);  // with autograd history within the BPTT window
  const auto fused = l.positions.narrow(1, 0, L) < 0;  // fused slots have no position of their own
  CompressedSlots c = compressor_->compress(i, in.keys, in.values, l.scores.narrow(1, 0, L), fused);
  auto positions = torch::cat({l.positions.narrow(1, 0, L).gather(1, c.parts.heavy),
                               torch::full({H, m}, -1, l.positions.options())}, 1);           // [Hkv, M]
  const auto order = compressed_order(H);                                                     // [Hkv, M]
  const auto rows = order.unsqueeze(-1).expand({H, order.size(1), c.keys.size(2)});
  replace_slots(i, c.keys.gather(1, rows), c.values.gather(1, rows), c.scores.gather(1, order),
                positions.gather(1, order));
}

std::unique_ptr<KvCache> make_lococo_cache(const ModelConfig& config, const CacheOptions& options,
                                           std::shared_ptr<LococoCompressor> compressor) {
  return std::make_unique<LococoCache>(config, options, std::move(compressor));
}

std::unique_ptr<KvCache> make_lococo_hh_cache(const ModelConfig& config, const CacheOptions& options) {
  return std::make_unique<LococoCache>(config, options, nullptr);
}

std::unique_ptr<KvCache> make_lococo_cache(const ModelConfig& config, const CacheOptions& options) {
  std::shared_ptr<LococoCompressor> compressor;
  if (!options.lococo.compressor.empty()) {
    compressor = LococoCompressor::load(options.lococo.compressor, config, options);
  } else if (options.lococo.allow_untrained) {
    compressor = std::make_shared<LococoCompressor>(CompressorOptions::from(config, options), options.lococo.seed);
  } else {
    throw std::invalid_argument(
        "--cache lococo needs a trained compressor: pass --compressor FILE, or --allow-untrained to run with a "
        "freshly initialised one");
  }
  compressor->to(options.device);
  return std::make_unique<LococoCache>(config, options, std::move(compressor));
}

}  // namespace lococo
