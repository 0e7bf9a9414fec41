// The cache protocol (lococo/kv/cache.h): CacheChunk drives it, so the calling
// order and what an interrupted chunk leaves behind are decided here only.
#include "lococo/kv/cache.h"

#include <stdexcept>

#include <fmt/format.h>

namespace lococo {

PositionMode parse_position_mode(const std::string& s) {
  if (s == "absolute") return PositionMode::Absolute;
  if (s == "cache") return PositionMode::Cache;
  throw std::invalid_argument("--positions must be 'absolute' or 'cache' (got '" + s + "')");
}

std::string to_string(PositionMode m) { return m == PositionMode::Absolute ? "absolute" : "cache"; }

KeysValues KvCache::append_unrotated(int, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) {
  throw std::logic_error(describe() + ": append_unrotated is not supported (check can_append_unrotated())");
}

void KvCache::reset() {
  clear();
  chunk_open_ = false;
  broken_ = false;
}

CacheChunk KvCache::begin_chunk(int64_t n_new) {
  if (broken_)
    throw std::logic_error(describe() + ": an earlier chunk was interrupted by an error; reset() the cache first");
  if (chunk_open_) throw std::logic_error(describe() + ": begin_chunk while another chunk is open");
  if (n_new <= 0) throw std::invalid_argument(fmt::format("{}: a chunk of {} tokens", describe(), n_new));
  CacheChunk chunk(this, n_new, num_layers());
  chunk_open_ = true;
  // Compressions happen here, for every layer before any appends (a layer's
  // prepare reads only its own slots); an exception leaves the cache broken.
  for (int i = 0; i < num_layers(); ++i) prepare(i, n_new);
  return chunk;
}

CacheChunk::CacheChunk(KvCache* cache, int64_t n_new, int num_layers)
    : cache_(cache), n_new_(n_new), appended_(static_cast<size_t>(num_layers), false) {}

CacheChunk::CacheChunk(CacheChunk&& other) noexcept
    : cache_(other.cache_), n_new_(other.n_new_), appended_(std::move(other.appended_)) {
  other.cache_ = nullptr;
}

CacheChunk::~CacheChunk() {
  if (!cache_) return;
  cache_->chunk_open_ = false;
  cache_->broken_ = true;
}

CacheChunk::Layer CacheChunk::layer(int i) {
  if (!cache_) throw std::logic_error("CacheChunk: used after end()");
  if (i < 0 || i >= static_cast<int>(appended_.size()))
    throw std::out_of_range(fmt::format("CacheChunk: layer {} of {}", i, appended_.size()));
  return Layer(this, i);
}

void CacheChunk::Layer::mark_appended() {
  const auto i = static_cast<size_t>(index_);
  if (chunk_->appended_[i]) throw std::logic_error(fmt::format("CacheChunk: layer {} appended twice in one chunk", index_));
  chunk_->appended_[i] = true;
}

KeysValues CacheChunk::Layer::append(const torch::Tensor& k_raw, const torch::Tensor& k_rot, const torch::Tensor& v) {
  mark_appended();
  return chunk_->cache_->append(index_, k_raw, k_rot, v);
}

KeysValues CacheChunk::Layer::append_unrotated(const torch::Tensor& k_raw, const torch::Tensor& k_rot,
                                               const torch::Tensor& v) {
  if (!chunk_->cache_->can_append_unrotated())
    throw std::logic_error(chunk_->cache_->describe() + ": append_unrotated without can_append_unrotated()");
  mark_appended();
  return chunk_->cache_->append_unrotated(index_, k_raw, k_rot, v);
}

void CacheChunk::Layer::observe(const AttentionStats& stats) {
  if (stats_request().any()) chunk_->cache_->observe(index_, stats);
}

void CacheChunk::end() {
  if (!cache_) throw std::logic_error("CacheChunk: end() called twice");
  for (size_t i = 0; i < appended_.size(); ++i)
    if (!appended_[i]) throw std::logic_error(fmt::format("CacheChunk: end() before layer {} appended", i));
  KvCache* cache = cache_;
  cache_ = nullptr;
  cache->end_chunk(n_new_);
  cache->chunk_open_ = false;
}

}  // namespace lococo
