// safetensors: the tensor file format of Hugging Face checkpoints.
//
// Layout of a file:
//   bytes [0, 8)        N, the header length, unsigned 64-bit little endian
//   bytes [8, 8 + N)    header: UTF-8 JSON object
//                         { "<tensor name>": {"dtype": "F32", "shape": [2, 3],
//                                             "data_offsets": [begin, end]}, ...,
//                           "__metadata__": {"key": "string value", ...} }   (optional)
//   bytes [8 + N, EOF)  the data; each tensor's bytes are [8 + N + begin, 8 + N + end),
//                       row-major, little endian.
// Rules checked on read: N fits in the file; the header is a JSON object; every
// dtype is known; end - begin == product(shape) * element size; ranges lie inside
// the data section and do not overlap.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace lococo {

struct TensorInfo {
  std::string name;
  std::string dtype;             // safetensors dtype string: "F32", "BF16", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;   // byte range relative to the data section
};

// A memory-mapped safetensors file. Tensors returned by `tensor` view the
// mapping (copy-on-write) and keep it alive.
class SafetensorsFile {
 public:
  // Throws std::runtime_error naming the file (and tensor / offset) on bad data.
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  bool contains(const std::string& name) const { return infos_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor in its stored dtype.
  torch::Tensor tensor(const std::string& name) const;

 private:
  std::filesystem::path path_;
  std::shared_ptr<void> mapping_;   // the whole file, unmapped when the last user goes
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;         // 8 + N
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes tensors (any of F32/F16/BF16/F64/I64/I32/I8/U8/BOOL) atomically, in the
// order given, header padded with spaces to a multiple of 8 bytes.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// safetensors dtype string <-> torch dtype; throws std::invalid_argument when unknown.
torch::Dtype dtype_from_safetensors(const std::string& s);
std::string dtype_to_safetensors(torch::Dtype t);

}  // namespace lococo
