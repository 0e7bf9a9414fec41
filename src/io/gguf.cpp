#include "lococo/io/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <fmt/format.h>

#include "lococo/core/io_util.h"

namespace lococo {
namespace {

using nlohmann::json;

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr int64_t kBlock = 32;           // values per Q8_0 / Q4_0 block
constexpr int kMaxArrayDepth = 4;        // arrays of arrays nest at most this deep
constexpr uint32_t kMaxDims = 4;         // ggml tensors have at most 4 dimensions

struct TypeEntry {
  GgmlType type;
  const char* name;
  int64_t block_values, block_bytes;
};
const TypeEntry kTypes[] = {
    {GgmlType::kF32, "F32", 1, 4},     {GgmlType::kF16, "F16", 1, 2},       {GgmlType::kBF16, "BF16", 1, 2},
    {GgmlType::kQ8_0, "Q8_0", kBlock, 34}, {GgmlType::kQ4_0, "Q4_0", kBlock, 18},
};

const TypeEntry* find_type(uint32_t raw) {
  for (const auto& e : kTypes)
    if (static_cast<uint32_t>(e.type) == raw) return &e;
  return nullptr;
}
const TypeEntry& type_entry(GgmlType t) { return *find_type(static_cast<uint32_t>(t)); }

// Fixed size in bytes of a scalar value type; 0 for string and array.
uint64_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64: return 8;
    default: return 0;
  }
}
bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// Bounds-checked little-endian reads from the mapping; every error names the
// file, what was being read and its byte offset.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& file) : data_(data), size_(size), file_(file) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(fmt::format("{}: {} (at byte {})", file_, what, pos_));
  }
  void need(uint64_t n, const std::string& what) const {
    if (n > remaining()) fail(fmt::format("truncated: {} needs {} bytes, {} left", what, n, remaining()));
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));  // little endian on every supported host
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " length");
    need(len, fmt::format("{} of length {}", what, len));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_, pos_ = 0;
  const std::string& file_;
};

json read_scalar(Cursor& c, GgufValueType t, const std::string& what) {
  switch (t) {
    case GgufValueType::kUint8: return c.read<uint8_t>(what);
    case GgufValueType::kInt8: return c.read<int8_t>(what);
    case GgufValueType::kUint16: return c.read<uint16_t>(what);
    case GgufValueType::kInt16: return c.read<int16_t>(what);
    case GgufValueType::kUint32: return c.read<uint32_t>(what);
    case GgufValueType::kInt32: return c.read<int32_t>(what);
    case GgufValueType::kFloat32: {
      // The shortest decimal that reads back as this float (1e-5f -> 1e-05, not
      // 9.99999974e-06): the number the file's writer meant.
      const float f = c.read<float>(what);
      return std::isfinite(f) ? std::stod(fmt::format("{}", f)) : static_cast<double>(f);
    }
    case GgufValueType::kBool: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) c.fail(fmt::format("{}: bool value {} is neither 0 nor 1", what, b));
      return b == 1;
    }
    case GgufValueType::kString: return c.read_string(what);
    case GgufValueType::kUint64: return c.read<uint64_t>(what);
    case GgufValueType::kInt64: return c.read<int64_t>(what);
    case GgufValueType::kFloat64: return c.read<double>(what);
    default: c.fail(fmt::format("{}: unexpected value type {}", what, static_cast<uint32_t>(t)));
  }
}

GgufValue read_value(Cursor& c, GgufValueType type, const std::string& what, int depth = 0) {
  GgufValue v;
  v.type = type;
  if (type != GgufValueType::kArray) {
    v.value = read_scalar(c, type, what);
    return v;
  }
  if (depth >= kMaxArrayDepth) c.fail(what + ": arrays nested more than " + std::to_string(kMaxArrayDepth) + " deep");
  const uint32_t elem = c.read<uint32_t>(what + " element type");
  if (!known_value_type(elem)) c.fail(fmt::format("{}: unknown array element type {}", what, elem));
  v.element_type = static_cast<GgufValueType>(elem);
  const uint64_t n = c.read<uint64_t>(what + " element count");
  // Every element takes at least its fixed size (strings and arrays at least 8 bytes).
  const uint64_t min_elem = std::max<uint64_t>(1, scalar_size(v.element_type) ? scalar_size(v.element_type) : 8);
  if (n > c.remaining() / min_elem)
    c.fail(fmt::format("{}: array of {} elements cannot fit in the {} bytes left", what, n, c.remaining()));
  v.value = json::array();
  auto& arr = v.value.get_ref<json::array_t&>();
  arr.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    const std::string elem_what = fmt::format("{}[{}]", what, i);
    if (v.element_type == GgufValueType::kArray) {
      // An element that is itself an array is stored as (element type, count, elements).
      arr.push_back(read_value(c, GgufValueType::kArray, elem_what, depth + 1).value);
    } else {
      arr.push_back(read_scalar(c, v.element_type, elem_what));
    }
  }
  return v;
}

// Bytes a tensor of `n` values of type `t` occupies.
uint64_t stored_bytes(const TypeEntry& t, int64_t n) { return static_cast<uint64_t>(n / t.block_values * t.block_bytes); }

float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return static_cast<float>(c10::Half(h, c10::Half::from_bits()));
}
void float_to_half(float f, uint8_t* p) {
  const uint16_t h = c10::Half(f).x;
  std::memcpy(p, &h, 2);
}

void write_value(std::ostream& out, GgufValueType type, GgufValueType elem, const json& v);

template <typename T>
void put(std::ostream& out, T v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_string(std::ostream& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

void write_scalar(std::ostream& out, GgufValueType t, const json& v) {
  switch (t) {
    case GgufValueType::kUint8: return put(out, v.get<uint8_t>());
    case GgufValueType::kInt8: return put(out, v.get<int8_t>());
    case GgufValueType::kUint16: return put(out, v.get<uint16_t>());
    case GgufValueType::kInt16: return put(out, v.get<int16_t>());
    case GgufValueType::kUint32: return put(out, v.get<uint32_t>());
    case GgufValueType::kInt32: return put(out, v.get<int32_t>());
    case GgufValueType::kFloat32: return put(out, v.get<float>());
    case GgufValueType::kBool: return put<uint8_t>(out, v.get<bool>() ? 1 : 0);
    case GgufValueType::kString: return put_string(out, v.get<std::string>());
    case GgufValueType::kUint64: return put(out, v.get<uint64_t>());
    case GgufValueType::kInt64: return put(out, v.get<int64_t>());
    case GgufValueType::kFloat64: return put(out, v.get<double>());
    case GgufValueType::kArray: break;
  }
  throw std::invalid_argument("GGUF: nested arrays are written with their element type");
}

void write_value(std::ostream& out, GgufValueType type, GgufValueType elem, const json& v) {
  if (type != GgufValueType::kArray) return write_scalar(out, type, v);
  if (!v.is_array()) throw std::invalid_argument("GGUF: an array value must be a JSON array");
  put<uint32_t>(out, static_cast<uint32_t>(elem));
  put<uint64_t>(out, v.size());
  for (const auto& e : v) write_scalar(out, elem, e);
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

std::string ggml_type_name(GgmlType type) { return type_entry(type).name; }

GgmlType ggml_type_from_name(const std::string& name) {
  std::string upper = name;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  for (const auto& e : kTypes)
    if (upper == e.name) return e.type;
  throw std::invalid_argument("unknown GGUF weight type '" + name + "' (expected f32, f16, bf16, q8_0 or q4_0)");
}

// ---- Block codecs ----------------------------------------------------------------

std::vector<uint8_t> quantize_q8_0(const float* values, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n / kBlock * 34));
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* x = values + b * kBlock;
    float amax = 0;
    for (int64_t j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float inv = d != 0 ? 1.0f / d : 0.0f;
    uint8_t* blk = out.data() + b * 34;
    float_to_half(d, blk);
    for (int64_t j = 0; j < kBlock; ++j) blk[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(x[j] * inv)));
  }
  return out;
}

std::vector<uint8_t> quantize_q4_0(const float* values, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n / kBlock * 18));
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* x = values + b * kBlock;
    float max = 0;  // the value of largest magnitude, with its sign: it maps to -8
    for (int64_t j = 0; j < kBlock; ++j)
      if (std::fabs(x[j]) > std::fabs(max)) max = x[j];
    const float d = max / -8.0f;
    const float inv = d != 0 ? 1.0f / d : 0.0f;
    uint8_t* blk = out.data() + b * 18;
    float_to_half(d, blk);
    // ggml's rounding (quantize_row_q4_0_ref): +8.5 then truncate, so files match llama.cpp's bit for bit.
    auto level = [&](float v) { return static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(v * inv + 8.5f)))); };
    for (int64_t j = 0; j < kBlock / 2; ++j) blk[2 + j] = level(x[j]) | static_cast<uint8_t>(level(x[j + 16]) << 4);
  }
  return out;
}

void dequantize_q8_0(const uint8_t* blocks, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const uint8_t* blk = blocks + b * 34;
    const float d = half_to_float(blk);
    for (int64_t j = 0; j < kBlock; ++j) out[b * kBlock + j] = d * static_cast<float>(static_cast<int8_t>(blk[2 + j]));
  }
}

void dequantize_q4_0(const uint8_t* blocks, int64_t n, float* out) {
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const uint8_t* blk = blocks + b * 18;
    const float d = half_to_float(blk);
    for (int64_t j = 0; j < kBlock / 2; ++j) {
      out[b * kBlock + j] = d * static_cast<float>((blk[2 + j] & 15) - 8);
      out[b * kBlock + j + 16] = d * static_cast<float>((blk[2 + j] >> 4) - 8);
    }
  }
}

// ---- Reader ---------------------------------------------------------------------

GgufFile::GgufFile(const std::filesystem::path& path) : path_(path) {
  const std::string file = path.string();
  mapping_ = map_file_private(path, size_);
  Cursor c(static_cast<const uint8_t*>(mapping_.get()), size_, file);
  if (c.read<uint32_t>("magic") != kMagic) c.fail("not a GGUF file (bad magic; expected \"GGUF\")");
  version_ = c.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3) c.fail(fmt::format("unsupported GGUF version {} (reads 2 and 3)", version_));
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // A key-value pair takes at least 8 + 4 + 1 bytes, a tensor info at least 8 + 4 + 8 + 4 + 8.
  if (n_kv > c.remaining() / 13) c.fail(fmt::format("metadata count {} cannot fit in the file", n_kv));
  if (n_tensors > c.remaining() / 32) c.fail(fmt::format("tensor count {} cannot fit in the file", n_tensors));

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.read_string(fmt::format("metadata key {}", i));
    const uint32_t type = c.read<uint32_t>("type of " + key);
    if (!known_value_type(type)) c.fail(fmt::format("metadata '{}': unknown value type {}", key, type));
    GgufValue v = read_value(c, static_cast<GgufValueType>(type), "metadata '" + key + "'");
    if (!metadata_.emplace(key, std::move(v)).second) c.fail("duplicate metadata key '" + key + "'");
  }
  if (auto it = metadata_.find("general.alignment"); it != metadata_.end()) {
    const auto& v = it->second;
    if (v.type != GgufValueType::kUint32 || v.value.get<uint64_t>() == 0 ||
        (v.value.get<uint64_t>() & (v.value.get<uint64_t>() - 1)) != 0)
      throw std::runtime_error(file + ": general.alignment must be a uint32 power of two");
    alignment_ = v.value.get<uint64_t>();
  }

  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.read_string(fmt::format("tensor name {}", i));
    const std::string what = "tensor '" + t.name + "'";
    const uint32_t n_dims = c.read<uint32_t>(what + " dimension count");
    if (n_dims == 0 || n_dims > kMaxDims) c.fail(fmt::format("{}: {} dimensions (1 to {} allowed)", what, n_dims, kMaxDims));
    int64_t count = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = c.read<uint64_t>(what + " dimension");
      if (dim == 0 || dim > (uint64_t{1} << 40) || __builtin_mul_overflow(count, static_cast<int64_t>(dim), &count))
        c.fail(fmt::format("{}: dimension {} = {} is out of range", what, d, dim));
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    const uint32_t raw_type = c.read<uint32_t>(what + " type");
    const TypeEntry* type = find_type(raw_type);
    if (!type) c.fail(fmt::format("{}: unsupported ggml type {} (reads F32, F16, BF16, Q8_0, Q4_0)", what, raw_type));
    t.type = type->type;
    if (t.dims[0] % type->block_values != 0)
      c.fail(fmt::format("{}: innermost dimension {} is not a multiple of {}'s block of {}", what, t.dims[0],
                         type->name, type->block_values));
    // More values than the file could hold would also overflow the byte count (found by fuzz_gguf).
    if (static_cast<uint64_t>(count) / static_cast<uint64_t>(type->block_values) > size_ / static_cast<uint64_t>(type->block_bytes))
      c.fail(fmt::format("{}: {} values of {} need more bytes than the file has", what, count, type->name));
    t.offset = c.read<uint64_t>(what + " offset");
    if (t.offset % alignment_ != 0) c.fail(fmt::format("{}: offset {} is not a multiple of the alignment {}", what, t.offset, alignment_));
    t.bytes = stored_bytes(*type, count);
    if (!index_.emplace(t.name, tensors_.size()).second) c.fail("duplicate tensor name '" + t.name + "'");
    tensors_.push_back(std::move(t));
  }

  data_start_ = align_up(c.pos(), alignment_);
  const uint64_t data_size = size_ >= data_start_ ? size_ - data_start_ : 0;
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors_) {
    if (t.offset > data_size || t.bytes > data_size - t.offset)
      throw std::runtime_error(fmt::format("{}: tensor '{}': data [{}, {}) lies beyond the end of the file ({} data bytes)",
                                           file, t.name, t.offset, t.offset + t.bytes, data_size));
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->bytes > by_offset[i]->offset)
      throw std::runtime_error(fmt::format("{}: tensors '{}' and '{}' overlap", file, by_offset[i - 1]->name, by_offset[i]->name));
}

const GgufValue& GgufFile::at(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) throw std::runtime_error(fmt::format("{}: metadata '{}' is missing", path_.string(), key));
  return it->second;
}

double GgufFile::number(const std::string& key, std::optional<double> fallback) const {
  if (!has(key)) {
    if (fallback) return *fallback;
    at(key);  // throws "missing"
  }
  const auto& v = at(key).value;
  if (!v.is_number()) throw std::runtime_error(fmt::format("{}: metadata '{}' is not a number", path_.string(), key));
  return v.get<double>();
}

int64_t GgufFile::count(const std::string& key, std::optional<int64_t> fallback) const {
  const double v = number(key, fallback ? std::optional<double>(static_cast<double>(*fallback)) : std::nullopt);
  if (v != std::floor(v) || v < 0 || v > 1e12)
    throw std::runtime_error(fmt::format("{}: metadata '{}' = {} is not a count", path_.string(), key, v));
  return static_cast<int64_t>(v);
}

std::string GgufFile::text(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = at(key).value;
  if (!v.is_string()) throw std::runtime_error(fmt::format("{}: metadata '{}' is not a string", path_.string(), key));
  return v.get<std::string>();
}

bool GgufFile::flag(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = at(key).value;
  if (!v.is_boolean()) throw std::runtime_error(fmt::format("{}: metadata '{}' is not a bool", path_.string(), key));
  return v.get<bool>();
}

const nlohmann::json& GgufFile::array(const std::string& key, GgufValueType element, size_t n) const {
  const auto& v = at(key);
  if (v.type != GgufValueType::kArray || v.element_type != element)
    throw std::runtime_error(fmt::format("{}: metadata '{}' is not an array of the expected type", path_.string(), key));
  if (n != 0 && v.value.size() != n)
    throw std::runtime_error(fmt::format("{}: metadata '{}' has {} entries, expected {}", path_.string(), key,
                                         v.value.size(), n));
  return v.value;
}

const GgufTensorInfo* GgufFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

// An fp32 tensor of `n` values dequantised from 32-value blocks of
// `block_bytes` each, the blocks split across the intra-op threads.
torch::Tensor dequantized(const uint8_t* blocks, const std::vector<int64_t>& shape, int64_t n, int64_t block_bytes,
                          void (*dequantize)(const uint8_t*, int64_t, float*)) {
  torch::Tensor out = torch::empty(shape);
  float* values = out.data_ptr<float>();
  at::parallel_for(0, n / kBlock, 4096, [&](int64_t b0, int64_t b1) {
    dequantize(blocks + b0 * block_bytes, (b1 - b0) * kBlock, values + b0 * kBlock);
  });
  return out;
}

}  // namespace

torch::Tensor GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find(name);
  if (!t) throw std::runtime_error(fmt::format("{}: tensor '{}' is missing", path_.string(), name));
  auto* base = static_cast<uint8_t*>(mapping_.get()) + data_start_ + t->offset;
  const auto keep = mapping_;
  auto view = [&](torch::Dtype dtype) {
    return torch::from_blob(base, t->shape(), [keep](void*) {}, torch::TensorOptions().dtype(dtype));
  };
  const int64_t n = std::accumulate(t->dims.begin(), t->dims.end(), int64_t{1}, std::multiplies<>());
  switch (t->type) {
    case GgmlType::kF32: return view(torch::kFloat32);
    case GgmlType::kF16: return view(torch::kFloat16);
    case GgmlType::kBF16: return view(torch::kBFloat16);
    case GgmlType::kQ8_0: return dequantized(base, t->shape(), n, 34, dequantize_q8_0);
    case GgmlType::kQ4_0: return dequantized(base, t->shape(), n, 18, dequantize_q4_0);
  }
  throw std::logic_error("unreachable ggml type");
}

// ---- Writer ---------------------------------------------------------------------

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : metadata_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, const torch::Tensor& tensor, GgmlType type) {
  const TypeEntry& e = type_entry(type);
  Entry entry;
  entry.info.name = name;
  entry.info.type = type;
  auto sizes = tensor.sizes();
  entry.info.dims.assign(sizes.rbegin(), sizes.rend());
  if (entry.info.dims.empty()) entry.info.dims = {1};
  if (entry.info.dims[0] % e.block_values != 0)
    throw std::invalid_argument(fmt::format("GGUF: tensor '{}': innermost dimension {} is not a multiple of {} ({})", name,
                                            entry.info.dims[0], e.block_values, e.name));
  const torch::Tensor f32 = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t n = f32.numel();
  const float* x = f32.data_ptr<float>();
  auto raw = [&](const torch::Tensor& t) {
    const auto* p = static_cast<const uint8_t*>(t.data_ptr());
    return std::vector<uint8_t>(p, p + t.numel() * t.element_size());
  };
  switch (type) {
    case GgmlType::kF32: entry.data = raw(f32); break;
    case GgmlType::kF16: entry.data = raw(f32.to(torch::kFloat16)); break;
    case GgmlType::kBF16: entry.data = raw(f32.to(torch::kBFloat16)); break;
    case GgmlType::kQ8_0: entry.data = quantize_q8_0(x, n); break;
    case GgmlType::kQ4_0: entry.data = quantize_q4_0(x, n); break;
  }
  entry.info.bytes = entry.data.size();
  tensors_.push_back(std::move(entry));
}

void GgufWriter::write(const std::filesystem::path& path) const {
  uint64_t alignment = 32;
  for (const auto& [key, v] : metadata_)
    if (key == "general.alignment") alignment = v.value.get<uint64_t>();
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    throw std::invalid_argument("GGUF: general.alignment must be a power of two");
  write_file_atomic(path, [&](std::ostream& out) {
    put<uint32_t>(out, kMagic);
    put<uint32_t>(out, 3);
    put<uint64_t>(out, tensors_.size());
    put<uint64_t>(out, metadata_.size());
    for (const auto& [key, v] : metadata_) {
      put_string(out, key);
      put<uint32_t>(out, static_cast<uint32_t>(v.type));
      write_value(out, v.type, v.element_type, v.value);
    }
    uint64_t offset = 0;
    for (const auto& t : tensors_) {
      put_string(out, t.info.name);
      put<uint32_t>(out, static_cast<uint32_t>(t.info.dims.size()));
      for (int64_t d : t.info.dims) put<uint64_t>(out, static_cast<uint64_t>(d));
      put<uint32_t>(out, static_cast<uint32_t>(t.info.type));
      put<uint64_t>(out, offset);
      offset = align_up(offset + t.data.size(), alignment);
    }
    auto pad_to = [&](uint64_t target) {
      const auto pos = static_cast<uint64_t>(out.tellp());
      for (uint64_t i = pos; i < target; ++i) out.put('\0');
    };
    const uint64_t data_start = align_up(static_cast<uint64_t>(out.tellp()), alignment);
    pad_to(data_start);
    // Every tensor, the last included, is padded to the alignment: ggml's
    // reader expects the data section to be a whole number of aligned blocks.
    for (const auto& t : tensors_) {
      out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
      pad_to(align_up(static_cast<uint64_t>(out.tellp()), alignment));
    }
  });
}

}  // namespace lococo
