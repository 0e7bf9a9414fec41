// Internal to the server: the token ids of long prompts, remembered piece by
// piece. A client that asks many questions about one book sends the book each
// time (prefix reuse then skips reading it, server/prompt_cache.h), and
// tokenising a megabyte costs seconds. The prompt is cut into pieces at line
// ends (core/text_pieces.h) and each piece's ids are kept under a hash of its
// bytes, so only pieces not seen lately are tokenised again.
//
// Pieces after the first are tokenised as text after a line end
// (Tokenizer::encode_after_line_end); that gives the whole text's tokens only
// where a line end is a token of its own, which the cache checks on a probe at
// construction (otherwise it tokenises prompts whole).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "lococo/tokenizer/tokenizer.h"

namespace lococo::server_detail {

class PieceTokenCache {
 public:
  // Keeps up to `capacity_tokens` ids (least recently used pieces go first).
  PieceTokenCache(const Tokenizer& tokenizer, int64_t capacity_tokens);
  // tokenizer.encode(text) (no BOS), from remembered pieces where it can;
  // nullopt when `keep_going()`, asked between pieces, says stop.
  std::optional<std::vector<int64_t>> encode(const std::string& text, const std::function<bool()>& keep_going = {});
  bool piecewise() const { return piecewise_; }

 private:
  static constexpr int64_t kPieceBytes = 16 << 10;  // prompts shorter than 4 pieces are tokenised whole
  const std::vector<int64_t>& piece_ids(const std::string& piece, bool first);  // under mu_

  const Tokenizer& tokenizer_;
  const int64_t capacity_;
  bool piecewise_ = false;
  std::mutex mu_;
  using Entry = std::pair<uint64_t, std::vector<int64_t>>;  // (hash of the piece, its ids)
  std::list<Entry> lru_;                                     // most recent first
  std::unordered_map<uint64_t, std::list<Entry>::iterator> by_hash_;
  int64_t held_ = 0;                                         // ids held
};

}  // namespace lococo::server_detail
