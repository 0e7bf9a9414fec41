// GGUF: the single-file model format of llama.cpp (version 3; version 2 reads the same).
//
// Layout of a file (all integers little endian):
//   uint32  magic             "GGUF" (bytes 47 47 55 46)
//   uint32  version           3
//   uint64  tensor_count
//   uint64  metadata_kv_count
//   metadata_kv_count times:  string key, uint32 value type, value
//   tensor_count times:       string name, uint32 n_dims (1..4), uint64 dims[n_dims],
//                             uint32 ggml type, uint64 offset (relative to the data section)
//   padding to `general.alignment` (uint32 metadata, default 32)
//   data section: each tensor at its offset, offsets multiples of the alignment
// where  string = uint64 length + that many UTF-8 bytes (no terminator)
//        value  = by type: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (1 byte),
//                 8 string, 9 array (uint32 element type, uint64 count, elements),
//                 10 u64, 11 i64, 12 f64.
// Tensor dims are ggml's order: dims[0] is the innermost (contiguous) one, so a
// row-major [rows, cols] matrix has dims {cols, rows}. Weight types read here:
//   F32 (0), F16 (1), BF16 (30), and blocks of 32 values along dims[0]:
//   Q8_0 (8): f16 scale d, int8 q[32];            value = d * q
//   Q4_0 (2): f16 scale d, uint8 nibbles[16];     value j < 16 = d * ((nibbles[j] & 15) - 8),
//                                                  value j + 16 = d * ((nibbles[j] >> 4) - 8)
// Rules checked on read: magic and version; every length, count and offset
// within the file; known value and tensor types; dims positive with
// dims[0] a multiple of the block size; offsets aligned, ranges inside the data
// section and not overlapping; unique keys and names.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace lococo {

enum class GgufValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ8_0 = 8, kBF16 = 30 };

// "F32", "F16", "BF16", "Q8_0", "Q4_0"; parse throws std::invalid_argument naming the text.
std::string ggml_type_name(GgmlType type);
GgmlType ggml_type_from_name(const std::string& name);

// One metadata value. Numbers, booleans and strings are JSON scalars; arrays are
// JSON arrays whose elements all have `element_type`. The types are kept so that
// a file reads back and writes out unchanged.
struct GgufValue {
  GgufValueType type = GgufValueType::kString;
  GgufValueType element_type = GgufValueType::kUint8;  // arrays only
  nlohmann::json value;

  static GgufValue string(const std::string& s) { return {GgufValueType::kString, {}, s}; }
  static GgufValue u32(uint32_t v) { return {GgufValueType::kUint32, {}, v}; }
  static GgufValue i32(int32_t v) { return {GgufValueType::kInt32, {}, v}; }
  static GgufValue f32(double v) { return {GgufValueType::kFloat32, {}, v}; }
  static GgufValue boolean(bool v) { return {GgufValueType::kBool, {}, v}; }
  static GgufValue array(GgufValueType element_type, nlohmann::json values) {
    return {GgufValueType::kArray, element_type, std::move(values)};
  }
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order (innermost first)
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;        // relative to the data section
  uint64_t bytes = 0;         // stored size

  std::vector<int64_t> shape() const { return {dims.rbegin(), dims.rend()}; }  // row-major torch shape
};

// A memory-mapped GGUF file.
class GgufFile {
 public:
  // Throws std::runtime_error naming the file and what is wrong (with its byte offset).
  explicit GgufFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  bool has(const std::string& key) const { return metadata_.count(key) > 0; }
  // The value of `key`; throws naming the file and key when it is missing.
  const GgufValue& at(const std::string& key) const;
  // Checked metadata: a wrong type is an error naming the file and key; a
  // missing key gives `fallback` (none: an error).
  double number(const std::string& key, std::optional<double> fallback = std::nullopt) const;
  int64_t count(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const;  // a whole number >= 0
  std::string text(const std::string& key, const std::string& fallback) const;
  bool flag(const std::string& key, bool fallback) const;
  // An array of `element`s; of exactly n entries unless n is 0.
  const nlohmann::json& array(const std::string& key, GgufValueType element, size_t n) const;
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find(const std::string& name) const;  // nullptr when absent

  // The tensor with its row-major shape: F32/F16/BF16 as stored (a view of the
  // mapping), Q8_0/Q4_0 dequantised to fp32. Throws naming file and tensor.
  torch::Tensor tensor(const std::string& name) const;

 private:
  std::filesystem::path path_;
  std::shared_ptr<void> mapping_;
  uint64_t size_ = 0, data_start_ = 0, alignment_ = 32;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

// Builds a GGUF file: metadata in the order set, tensors in the order added.
class GgufWriter {
 public:
  void set(const std::string& key, GgufValue value);
  // Stores `tensor` (any float dtype, contiguous or not) as `type`; quantised
  // types need the innermost dimension to be a multiple of 32.
  void add_tensor(const std::string& name, const torch::Tensor& tensor, GgmlType type);
  // Writes atomically (temporary file, then rename), tensors aligned to
  // `general.alignment` when set (a uint32 power of two), else 32.
  void write(const std::filesystem::path& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  struct Entry {
    GgufTensorInfo info;
    std::vector<uint8_t> data;
  };
  std::vector<Entry> tensors_;
};

// Block codecs (exposed for tests): `values` is a multiple of 32 floats.
std::vector<uint8_t> quantize_q8_0(const float* values, int64_t n);
std::vector<uint8_t> quantize_q4_0(const float* values, int64_t n);
void dequantize_q8_0(const uint8_t* blocks, int64_t n, float* out);
void dequantize_q4_0(const uint8_t* blocks, int64_t n, float* out);

}  // namespace lococo
