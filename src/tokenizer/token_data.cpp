#include "lococo/tokenizer/token_data.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lococo/core/io_util.h"

namespace lococo {
namespace {

constexpr char kMagic[9] = "LCTOKS01";

// Identifies the tokenizer by how it encodes a probe text.
std::string tokenizer_fingerprint(const Tokenizer& t) {
  const auto ids = t.encode("The pass key is 12345. Call me Ishmael; it was the best of times!\n\t\xc3\xa9", true);
  size_t h = std::hash<int64_t>{}(t.vocab_size());
  for (auto id : ids) h = h * 1000003u ^ std::hash<int64_t>{}(id);
  return std::to_string(h);
}

nlohmann::json source_key(const std::vector<std::filesystem::path>& files, const Tokenizer& t) {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& f : files) {
    const auto mtime = std::filesystem::last_write_time(f).time_since_epoch().count();
    sources.push_back({std::filesystem::absolute(f).string(), std::filesystem::file_size(f), mtime});
  }
  return {{"sources", sources}, {"tokenizer", tokenizer_fingerprint(t)}};
}

void write_token_file(const std::filesystem::path& p, const nlohmann::json& key, const std::vector<int32_t>& ids) {
  const std::string k = key.dump();
  const uint64_t n = ids.size(), klen = k.size();
  write_file_atomic(p, [&](std::ostream& out) {
    out.write(kMagic, 8);
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(reinterpret_cast<const char*>(&klen), 8);
    out.write(k.data(), static_cast<std::streamsize>(k.size()));
    out.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(n * 4));
  });
}

}  // namespace

torch::Tensor read_token_file(const std::filesystem::path& p, const nlohmann::json& key, int64_t vocab_size) {
  std::error_code error;
  const uint64_t file_bytes = std::filesystem::file_size(p, error);
  std::ifstream in(p, std::ios::binary);
  if (error || !in) return {};
  char magic[8];
  uint64_t n = 0, k = 0;
  in.read(magic, 8).read(reinterpret_cast<char*>(&n), 8).read(reinterpret_cast<char*>(&k), 8);
  // The sizes must add up to the file's: a corrupt count never becomes an allocation.
  if (!in || std::memcmp(magic, kMagic, 8) != 0 || k > file_bytes - 24 || n != (file_bytes - 24 - k) / 4 ||
      (file_bytes - 24 - k) % 4 != 0)
    return {};
  std::string stored(k, '\0');
  in.read(stored.data(), static_cast<std::streamsize>(k));
  if (!in || nlohmann::json::parse(stored, nullptr, false) != key) return {};
  auto ids = torch::empty({static_cast<int64_t>(n)}, torch::kInt32);
  in.read(static_cast<char*>(ids.data_ptr()), static_cast<std::streamsize>(n * 4));
  if (!in) return {};
  if (n > 0 && (ids.min().item<int32_t>() < 0 || ids.max().item<int32_t>() >= vocab_size)) return {};
  return ids.to(torch::kInt64);
}

std::vector<std::filesystem::path> list_text_files(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (const auto& p : paths) {
    if (fs::is_directory(p)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
    } else if (fs::is_regular_file(p)) {
      files.emplace_back(p);
    } else {
      throw std::runtime_error(p + ": no such file or directory");
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw std::runtime_error(fmt::format("no .txt files in {}", fmt::join(paths, ", ")));
  return files;
}

TokenData::TokenData(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                     const std::filesystem::path& cache_dir) {
  const auto files = list_text_files(paths);
  const nlohmann::json key = source_key(files, tokenizer);
  const std::string name = fmt::format("{:016x}", std::hash<std::string>{}(key.dump()));
  file_ = cache_dir / (name + ".tokens");
  tokens_ = read_token_file(file_, key, tokenizer.vocab_size());
  if (tokens_.defined()) return;
  std::vector<int32_t> ids;
  for (const auto& f : files) {
    for (int64_t id : tokenizer.encode(read_text_file(f), /*add_bos=*/true)) ids.push_back(static_cast<int32_t>(id));
  }
  write_token_file(file_, key, ids);
  tokens_ = torch::from_blob(ids.data(), {static_cast<int64_t>(ids.size())}, torch::kInt32).to(torch::kInt64);
}

TokenData::TokenData(std::vector<int32_t> ids) {
  tokens_ = torch::from_blob(ids.data(), {static_cast<int64_t>(ids.size())}, torch::kInt32).to(torch::kInt64);
}

torch::Tensor TokenData::random_window(int64_t length, std::mt19937_64& rng) const {
  if (length > size())
    throw std::invalid_argument(fmt::format("training window of {} tokens is longer than the data ({} tokens)",
                                            length, size()));
  std::uniform_int_distribution<int64_t> start(0, size() - length);
  return tokens_.narrow(0, start(rng), length);
}

std::vector<std::pair<int64_t, int64_t>> TokenData::documents(int64_t bos_id) const {
  std::vector<std::pair<int64_t, int64_t>> docs;
  const int64_t* p = tokens_.data_ptr<int64_t>();
  int64_t begin = 0;
  for (int64_t i = 1; i <= size(); ++i)
    if (i == size() || p[i] == bos_id) {
      if (i > begin) docs.emplace_back(begin, i);
      begin = i;
    }
  return docs;
}

}  // namespace lococo
