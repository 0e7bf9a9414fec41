// Training and evaluation text as token ids.
//
// Text files (or directories of .txt files) are tokenised once with the model's
// tokenizer into a token file `<cache_dir>/<name>.tokens`, reused while the
// sources and the tokenizer are unchanged. Documents are separated by BOS.
//
// Token file layout (little endian):
//   bytes [0, 8)    magic "LCTOKS01"
//   bytes [8, 16)   N, number of tokens (uint64)
//   bytes [16, 24)  K, bytes of the JSON key that follows (uint64)
//   bytes [24, 24+K) key: JSON {sources: [[path, size, mtime]...], tokenizer: <hash>}
//   then N int32 token ids.
#pragma once

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "lococo/tokenizer/tokenizer.h"

namespace lococo {

// The .txt files named by `paths` (files, or directories searched recursively),
// sorted; throws std::runtime_error naming a path that does not exist.
std::vector<std::filesystem::path> list_text_files(const std::vector<std::string>& paths);

// The ids of a token file whose key equals `key`, as int64 [N]; undefined
// when the file is missing, stale (another key), cut short, longer than it
// says, or holds an id outside [0, vocab_size): the caller tokenises again.
torch::Tensor read_token_file(const std::filesystem::path& file, const nlohmann::json& key, int64_t vocab_size);

class TokenData {
 public:
  // Tokenises `paths` (or reuses the token file in `cache_dir`).
  TokenData(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
            const std::filesystem::path& cache_dir);
  // Wraps ids already in memory (tests).
  explicit TokenData(std::vector<int32_t> ids);

  int64_t size() const { return tokens_.size(0); }
  const torch::Tensor& tokens() const { return tokens_; }  // [N] int64
  // A window of `length` tokens starting at a uniformly random offset.
  torch::Tensor random_window(int64_t length, std::mt19937_64& rng) const;
  // Documents as token ranges [begin, end) (split at BOS).
  std::vector<std::pair<int64_t, int64_t>> documents(int64_t bos_id) const;
  const std::filesystem::path& file() const { return file_; }

 private:
  torch::Tensor tokens_;            // [N] int64
  std::filesystem::path file_;
};

}  // namespace lococo
