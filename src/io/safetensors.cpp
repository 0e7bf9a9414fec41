#include "lococo/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lococo/core/io_util.h"

namespace lococo {
namespace {

using nlohmann::json;

struct DtypeEntry {
  const char* name;
  torch::Dtype dtype;
};
const DtypeEntry kDtypes[] = {
    {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"F64", torch::kFloat64}, {"I64", torch::kInt64},   {"I32", torch::kInt32},
    {"I16", torch::kInt16},   {"I8", torch::kInt8},     {"U8", torch::kUInt8},
    {"BOOL", torch::kBool},
};

int64_t element_size(const std::string& dtype) {
  return static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(
      caffe2::TypeMeta::fromScalarType(dtype_from_safetensors(dtype)))));
}

}  // namespace

torch::Dtype dtype_from_safetensors(const std::string& s) {
  for (const auto& e : kDtypes)
    if (s == e.name) return e.dtype;
  throw std::invalid_argument("unknown safetensors dtype '" + s + "'");
}

std::string dtype_to_safetensors(torch::Dtype t) {
  for (const auto& e : kDtypes)
    if (t == e.dtype) return e.name;
  throw std::invalid_argument(std::string("dtype has no safetensors name: ") + c10::toString(t));
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path) {
  const std::string file = path.string();
  mapping_ = map_file_private(path, file_size_);
  const auto* bytes = static_cast<const uint8_t*>(mapping_.get());
  if (file_size_ < 8)
    throw std::runtime_error(fmt::format("{}: truncated: {} bytes, need at least 8", file, file_size_));
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little endian on every supported host
  if (header_len > file_size_ - 8)
    throw std::runtime_error(fmt::format(
        "{}: header length {} at offset 0 runs past end of file ({} bytes)", file, header_len, file_size_));
  data_start_ = 8 + header_len;

  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(fmt::format("{}: header is not valid JSON (byte {} of the header)", file, e.byte));
  } catch (const json::exception& e) {  // a number too large for a double (found by fuzz_safetensors)
    throw std::runtime_error(fmt::format("{}: header is not valid JSON ({})", file, e.what()));
  }
  if (!header.is_object()) throw std::runtime_error(file + ": header is not a JSON object");

  const uint64_t data_size = file_size_ - data_start_;
  for (const auto& item : header.items()) {
    const std::string& name = item.key();  // plain names: lambdas below capture them (clang 14)
    const auto& entry = item.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) throw std::runtime_error(file + ": __metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) throw std::runtime_error(fmt::format("{}: metadata '{}' is not a string", file, k));
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto where = [&](const std::string& what) {
      return std::runtime_error(fmt::format("{}: tensor '{}': {}", file, name, what));
    };
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets"))
      throw where("entry needs dtype, shape and data_offsets");
    TensorInfo info;
    info.name = name;
    // Only non-negative integers convert: JSON floats (1.6e25) or negatives would
    // not fit the integer types (found by fuzz_safetensors).
    auto counts = [&](const json& a, const char* field) {
      if (!a.is_array()) throw where(std::string(field) + " must be an array");
      std::vector<uint64_t> out;
      for (const auto& v : a) {
        if (!v.is_number_unsigned() || v.get<uint64_t>() > (uint64_t{1} << 62))
          throw where(fmt::format("{} entry {} is not a non-negative integer", field, v.dump()));
        out.push_back(v.get<uint64_t>());
      }
      return out;
    };
    if (!entry["dtype"].is_string()) throw where("dtype must be a string");
    info.dtype = entry["dtype"].get<std::string>();
    for (uint64_t d : counts(entry["shape"], "shape")) info.shape.push_back(static_cast<int64_t>(d));
    const auto offs = counts(entry["data_offsets"], "data_offsets");
    if (offs.size() != 2) throw where("data_offsets must have two entries");
    info.begin = offs[0];
    info.end = offs[1];
    int64_t esize = 0;
    try {
      esize = element_size(info.dtype);
    } catch (const std::invalid_argument&) {
      throw where("unknown dtype '" + info.dtype + "'");
    }
    uint64_t numel = 1;
    for (int64_t d : info.shape)
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) || numel > data_size)
        throw where("shape has more elements than the data section has bytes");
    if (info.end < info.begin || info.end > data_size)
      throw where(fmt::format("data_offsets [{}, {}] outside the data section ({} bytes, file offset {})",
                              info.begin, info.end, data_size, data_start_));
    if (info.end - info.begin != numel * static_cast<uint64_t>(esize))
      throw where(fmt::format("byte range [{}, {}] holds {} bytes but shape x dtype needs {}", info.begin,
                              info.end, info.end - info.begin, numel * esize));
    infos_[name] = std::move(info);
  }

  // No two tensors may share bytes.
  std::vector<const TensorInfo*> sorted;
  for (const auto& [_, info] : infos_) sorted.push_back(&info);
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  const TensorInfo* furthest = nullptr;  // the earlier tensor reaching furthest
  for (const TensorInfo* t : sorted) {
    if (t->end == t->begin) continue;  // empty tensors occupy no bytes
    if (furthest && t->begin < furthest->end)
      throw std::runtime_error(fmt::format("{}: tensors '{}' and '{}' overlap at data offset {}", file,
                                           furthest->name, t->name, t->begin));
    if (!furthest || t->end > furthest->end) furthest = t;
  }
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) throw std::runtime_error(fmt::format("{}: missing tensor '{}'", path_.string(), name));
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : infos_) out.push_back(name);
  return out;
}

torch::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  auto* base = static_cast<uint8_t*>(mapping_.get()) + data_start_ + ti.begin;
  auto keep_alive = mapping_;
  auto options = torch::TensorOptions().dtype(dtype_from_safetensors(ti.dtype));
  if (ti.end == ti.begin) return torch::empty(ti.shape, options);
  // Views must be aligned for their element type; otherwise copy out.
  const auto esize = static_cast<uintptr_t>(element_size(ti.dtype));
  if (reinterpret_cast<uintptr_t>(base) % esize != 0) {
    auto out = torch::empty(ti.shape, options);
    std::memcpy(out.data_ptr(), base, ti.end - ti.begin);
    return out;
  }
  return torch::from_blob(base, ti.shape, [keep_alive](void*) {}, options);
}

void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw std::invalid_argument("tensor name '__metadata__' is reserved");
    auto c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t n = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype_to_safetensors(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    contiguous.push_back(c);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t len = text.size();
  write_file_atomic(path, [&](std::ostream& out) {
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& c : contiguous)
      out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
  });
}

}  // namespace lococo
