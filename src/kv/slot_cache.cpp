#include "kv/slot_cache.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

namespace lococo {

// ---------------------------------------------------------------------------
// SlotCache

SlotCache::SlotCache(const ModelConfig& config, const CacheOptions& options, int64_t initial_capacity)
    : config_(config), options_(options), layers_(config.num_layers), rope_(config) {
  auto kv = torch::TensorOptions().dtype(options.dtype).device(options.device);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(options.device);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(options.device);
  for (auto& l : layers_) {
    l.k = torch::zeros({config.num_kv_heads, initial_capacity, config.head_dim}, kv);
    l.v = torch::zeros({config.num_kv_heads, initial_capacity, config.head_dim}, kv);
    l.scores = torch::zeros({config.num_kv_heads, initial_capacity}, f32);
    l.positions = torch::full({config.num_kv_heads, initial_capacity}, -1, i64);
  }
}

int64_t SlotCache::chunk_position(int layer) const {
  return options_.positions == PositionMode::Absolute ? seen_ : layers_[layer].len;
}

void SlotCache::ensure_capacity(int i, int64_t needed) {
  LayerSlots& l = layers_[i];
  const int64_t cap = l.k.size(1);
  if (needed <= cap) return;
  // Amortised growth: at least double, so appends cost O(1) per token overall.
  const int64_t new_cap = std::max(needed, 2 * cap);
  auto grow = [&](torch::Tensor& t, double fill) {
    auto sizes = t.sizes().vec();
    sizes[1] = new_cap;
    auto bigger = torch::full(sizes, fill, t.options());
    bigger.narrow(1, 0, l.len).copy_(t.narrow(1, 0, l.len));
    t = bigger;
  };
  torch::NoGradGuard no_grad;
  grow(l.k, 0.0);
  grow(l.v, 0.0);
  grow(l.scores, 0.0);
  grow(l.positions, -1.0);
}

bool SlotCache::write_one_slot(LayerSlots& l, int64_t slot, const torch::Tensor& k, const torch::Tensor& v) const {
  const auto plain = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
  };
  if (!plain(l.k) || !plain(l.v) || !plain(l.scores) || !l.positions.is_contiguous() || !plain(k) || !plain(v) ||
      k.requires_grad() || v.requires_grad())
    return false;
  const int64_t H = l.k.size(0), cap = l.k.size(1), d = l.k.size(2);
  float* kd = l.k.data_ptr<float>();  // [H, cap, d]
  float* vd = l.v.data_ptr<float>();
  float* scores = l.scores.data_ptr<float>();          // [H, cap]
  int64_t* positions = l.positions.data_ptr<int64_t>();  // [H, cap]
  for (int64_t h = 0; h < H; ++h) {
    std::memcpy(kd + (h * cap + slot) * d, k.data_ptr<float>() + h * d, d * sizeof(float));
    std::memcpy(vd + (h * cap + slot) * d, v.data_ptr<float>() + h * d, d * sizeof(float));
    scores[h * cap + slot] = 0;
    positions[h * cap + slot] = seen_;
  }
  return true;
}

KeysValues SlotCache::store(int i, const torch::Tensor& k_raw, const torch::Tensor& k_rot, const torch::Tensor& v,
                            bool rotate) {
  LayerSlots& l = layers_[i];
  const int64_t n = k_rot.size(1);
  TORCH_CHECK(k_rot.dim() == 3 && k_rot.size(0) == config_.num_kv_heads && k_rot.size(2) == config_.head_dim,
              "KvCache::append: keys must be [Hkv, n, d]");
  const int64_t start = l.len;
  const int64_t pos0 = chunk_position(i);
  ensure_capacity(i, start + n);
  const torch::Tensor& k_store = options_.positions == PositionMode::Absolute ? k_rot : k_raw;
  if (n == 1 && write_one_slot(l, start, k_store, v)) {
    // decoding: written through pointers (a dozen libtorch ops cost more than the copy)
  } else {
    torch::NoGradGuard no_grad;  // the stored cache is always detached (truncated backprop)
    l.k.narrow(1, start, n).copy_(k_store);
    l.v.narrow(1, start, n).copy_(v);
    l.scores.narrow(1, start, n).zero_();
    l.positions.narrow(1, start, n).copy_(
          torch::arange(seen_, seen_ + n, l.positions.options()).expand({l.positions.size(0), n}));
  }
  l.len = start + n;
  max_position_ = std::max(max_position_, pos0 + n);

  const bool differentiable =
      torch::GradMode::is_enabled() && (k_rot.requires_grad() || v.requires_grad() || l.live_k.defined());
  torch::Tensor keys, values;
  bool rotate_at_slot_index = false;
  if (differentiable) {
    // Training: keep the chunk's (and recent compressions') autograd history.
    auto prefix_k = l.live_k.defined() ? l.live_k : l.k.narrow(1, 0, start);
    auto prefix_v = l.live_v.defined() ? l.live_v : l.v.narrow(1, 0, start);
    const auto stored_k = torch::cat({prefix_k.to(k_store.scalar_type()), k_store}, 1);  // [Hkv, len, d] as stored
    values = torch::cat({prefix_v.to(v.scalar_type()), v}, 1);
    keys = options_.positions == PositionMode::Cache
               ? torch::cat({rope_.rotate(prefix_k, 0).to(k_rot.scalar_type()), k_rot}, 1)
               : stored_k;
    if (l.live_k.defined() && ++l.live_age < options_.bptt_chunks) {
      l.live_k = stored_k;  // the history goes on into the next chunk's compression
      l.live_v = values;
      return {keys, values, false};
    }
  } else {
    rotate_at_slot_index = options_.positions == PositionMode::Cache && !rotate;
    keys = options_.positions == PositionMode::Cache && rotate ? rotated_slots(i, l.len) : l.k.narrow(1, 0, l.len);
    values = l.v.narrow(1, 0, l.len);
  }
  l.live_k = torch::Tensor();
  l.live_v = torch::Tensor();
  l.live_age = 0;
  return {keys, values, rotate_at_slot_index};
}

void SlotCache::detach_history() {
  for (auto& l : layers_) {
    l.live_k = torch::Tensor();
    l.live_v = torch::Tensor();
    l.live_age = 0;
  }
}

KeysValues SlotCache::compression_input(int i) const {
  const LayerSlots& l = layers_[i];
  if (l.live_k.defined()) return {l.live_k, l.live_v};
  return {l.k.narrow(1, 0, l.len), l.v.narrow(1, 0, l.len)};
}

KeysValues SlotCache::append(int i, const torch::Tensor& k_raw, const torch::Tensor& k_rot, const torch::Tensor& v) {
  return store(i, k_raw, k_rot, v, /*rotate=*/true);
}

KeysValues SlotCache::append_unrotated(int i, const torch::Tensor& k_raw, const torch::Tensor& k_rot,
                                       const torch::Tensor& v) {
  return store(i, k_raw, k_rot, v, /*rotate=*/false);  // in training the keys still come back rotated
}

torch::Tensor SlotCache::rotated_slots(int i, int64_t len) {
  const torch::Tensor& k = layers_[i].k;  // [Hkv, cap, d]
  const int64_t H = k.size(0), d = k.size(2), half = d / 2;
  if (!rotated_.defined() || rotated_.size(1) < len || rotated_.scalar_type() != k.scalar_type()) {
    const int64_t rows = std::max(len, k.size(1));
    rotated_ = torch::empty({H, rows, d}, k.options());
    rot_tmp_ = torch::empty({H, rows, half}, k.options());
  }
  torch::NoGradGuard no_grad;
  auto cos = rope_.slot_cos(len).narrow(0, 0, len), sin = rope_.slot_sin(len).narrow(0, 0, len);  // [len, d/2]
  if (k.scalar_type() != torch::kFloat32) {
    cos = cos.to(k.scalar_type());
    sin = sin.to(k.scalar_type());
  }
  auto out = rotated_.narrow(1, 0, len);
  auto tmp = rot_tmp_.narrow(1, 0, len);
  RopeTable::rotate_into(k.narrow(1, 0, len), cos, sin, out, tmp);
  return out;
}

void SlotCache::end_chunk(int64_t n_new) { seen_ += n_new; }

int64_t SlotCache::bytes() const {
  int64_t total = 0;
  for (const auto& l : layers_) total += (l.k.numel() + l.v.numel()) * l.k.element_size();
  return total;
}

void SlotCache::clear() {
  for (auto& l : layers_) {
    l.len = 0;
    l.live_k = torch::Tensor();
    l.live_v = torch::Tensor();
    l.live_age = 0;
  }
  seen_ = 0;
  max_position_ = 0;
}

KeysValues SlotCache::stored(int i) const {
  const LayerSlots& l = layers_[i];
  return {l.k.narrow(1, 0, l.len), l.v.narrow(1, 0, l.len)};
}

torch::Tensor SlotCache::stored_scores(int i) const { return layers_[i].scores.narrow(1, 0, layers_[i].len); }

CacheSnapshot SlotCache::snapshot() const {
  CacheSnapshot s;
  auto copy = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU).contiguous().clone(); };
  for (size_t i = 0; i < layers_.size(); ++i) {
    const LayerSlots& l = layers_[i];
    const std::string at = fmt::format("layers.{}.", i);
    s.tensors.emplace_back(at + "keys", copy(l.k.narrow(1, 0, l.len)));            // [Hkv, len, d]
    s.tensors.emplace_back(at + "values", copy(l.v.narrow(1, 0, l.len)));          // [Hkv, len, d]
    s.tensors.emplace_back(at + "scores", copy(l.scores.narrow(1, 0, l.len)));     // [Hkv, len]
    s.tensors.emplace_back(at + "positions", copy(l.positions.narrow(1, 0, l.len)));  // [Hkv, len]
  }
  s.counters = {{"tokens_seen", seen_}, {"max_position", max_position_}};
  add_policy_state(s);
  return s;
}

void SlotCache::restore(const CacheSnapshot& s) {
  reset();
  try {
    SnapshotReader r(s);
    const int64_t H = config_.num_kv_heads, d = config_.head_dim;
    for (size_t i = 0; i < layers_.size(); ++i) {
      const std::string at = fmt::format("layers.{}.", i);
      const auto it = std::find_if(s.tensors.begin(), s.tensors.end(), [&](const auto& t) { return t.first == at + "keys"; });
      if (it == s.tensors.end()) throw std::invalid_argument(fmt::format("tensor '{}keys' is missing", at));
      const int64_t len = it->second.dim() == 3 ? it->second.size(1) : -1;
      if (len < 0) throw std::invalid_argument(fmt::format("tensor '{}keys' must have 3 dimensions", at));
      ensure_capacity(static_cast<int>(i), len);
      LayerSlots& l = layers_[i];
      torch::NoGradGuard no_grad;
      l.k.narrow(1, 0, len).copy_(r.take(at + "keys", {H, len, d}, options_.dtype, options_.device));
      l.v.narrow(1, 0, len).copy_(r.take(at + "values", {H, len, d}, options_.dtype, options_.device));
      l.scores.narrow(1, 0, len).copy_(r.take(at + "scores", {H, len}, torch::kFloat32, options_.device));
      l.positions.narrow(1, 0, len).copy_(r.take(at + "positions", {H, len}, torch::kInt64, options_.device));
      l.len = len;
    }
    auto counter = [&](const char* name) {
      if (!s.counters.is_object() || !s.counters.contains(name) || !s.counters[name].is_number_integer() ||
          s.counters[name].get<int64_t>() < 0)
        throw std::invalid_argument(fmt::format("counter '{}' is missing or not a count", name));
      return s.counters[name].get<int64_t>();
    };
    seen_ = counter("tokens_seen");
    max_position_ = counter("max_position");
    restore_policy_state(r);
    r.expect_all_taken();
  } catch (...) {
    reset();
    throw;
  }
}

SlotCache::SnapshotReader::SnapshotReader(const CacheSnapshot& s) {
  for (const auto& [name, t] : s.tensors)
    if (!tensors_.emplace(name, t).second) throw std::invalid_argument(fmt::format("tensor '{}' appears twice", name));
}

torch::Tensor SlotCache::SnapshotReader::take(const std::string& name, const std::vector<int64_t>& sizes,
                                              torch::ScalarType type, torch::Device device) {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) throw std::invalid_argument(fmt::format("tensor '{}' is missing", name));
  if (it->second.sizes() != torch::IntArrayRef(sizes))
    throw std::invalid_argument(fmt::format("tensor '{}' has shape [{}], expected [{}]", name,
                                            fmt::join(it->second.sizes(), ", "), fmt::join(sizes, ", ")));
  if (it->second.is_floating_point() != c10::isFloatingType(type))
    throw std::invalid_argument(fmt::format("tensor '{}' has dtype {}, expected {}", name,
                                            c10::toString(it->second.scalar_type()), c10::toString(type)));
  taken_.insert(name);
  return it->second.to(device, type);
}

void SlotCache::SnapshotReader::expect_all_taken() const {
  for (const auto& [name, t] : tensors_)
    if (!taken_.count(name)) throw std::invalid_argument(fmt::format("unexpected tensor '{}'", name));
}

torch::Tensor SlotCache::stored_positions(int i) const {
  return layers_[i].positions.narrow(1, 0, layers_[i].len);
}

void SlotCache::keep_slots(int i, const torch::Tensor& index) {
  LayerSlots& l = layers_[i];
  const int64_t H = l.k.size(0), d = l.k.size(2);
  auto idx = index.dim() == 1 ? index.unsqueeze(0).expand({H, index.size(0)}) : index;  // [H, n]
  const int64_t n = idx.size(1);
  TORCH_CHECK(n <= l.len, "keep_slots: more slots kept than stored");
  auto idx_d = idx.unsqueeze(-1).expand({H, n, d});
  {
    torch::NoGradGuard no_grad;
    auto k = l.k.gather(1, idx_d);
    auto v = l.v.gather(1, idx_d);
    auto s = l.scores.gather(1, idx);
    auto p = l.positions.gather(1, idx);
    l.k.narrow(1, 0, n).copy_(k);
    l.v.narrow(1, 0, n).copy_(v);
    l.scores.narrow(1, 0, n).copy_(s);
    l.positions.narrow(1, 0, n).copy_(p);
  }
  l.len = n;
  if (l.live_k.defined()) {  // the kept slots keep their history
    l.live_k = l.live_k.gather(1, idx_d);
    l.live_v = l.live_v.gather(1, idx_d);
  }
}

void SlotCache::replace_slots(int i, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& scores,
                              const torch::Tensor& positions) {
  LayerSlots& l = layers_[i];
  const int64_t n = k.size(1);
  ensure_capacity(i, n);
  {
    torch::NoGradGuard no_grad;
    l.k.narrow(1, 0, n).copy_(k);
    l.v.narrow(1, 0, n).copy_(v);
    l.scores.narrow(1, 0, n).copy_(scores);
    if (positions.defined())
      l.positions.narrow(1, 0, n).copy_(positions);
    else
      l.positions.narrow(1, 0, n).fill_(-1);
  }
  l.len = n;
  if (torch::GradMode::is_enabled() && (k.requires_grad() || v.requires_grad())) {
    l.live_k = k;  // live_age goes on counting when the input was live too
    l.live_v = v;
  } else {
    l.live_k = torch::Tensor();
    l.live_v = torch::Tensor();
    l.live_age = 0;
  }
}

// ---------------------------------------------------------------------------
// BoundedCache

int64_t bounded_capacity(const CacheOptions& o) {
  if (o.budget <= 0) throw std::invalid_argument(fmt::format("--budget must be positive (got {})", o.budget));
  if (o.buffer < 0) throw std::invalid_argument(fmt::format("--buffer must not be negative (got {})", o.buffer));
  if (o.chunk <= 0) throw std::invalid_argument(fmt::format("--chunk must be positive (got {})", o.chunk));
  return o.budget + o.buffer + o.chunk;
}

BoundedCache::BoundedCache(const ModelConfig& config, const CacheOptions& options)
    : SlotCache(config, options, bounded_capacity(options)) {}

void BoundedCache::prepare(int i, int64_t n_new) {
  chunk_tokens_ = n_new;
  if (slots(i) <= options_.budget + options_.buffer) return;
  compress(i);
  TORCH_CHECK(slots(i) == options_.budget, describe(), ": compression left ", slots(i), " slots, not ",
              options_.budget);
}


}  // namespace lococo
