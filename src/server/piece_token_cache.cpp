#include "server/piece_token_cache.h"

#include <sstream>

#include <xxhash.h>

#include "lococo/core/text_pieces.h"

namespace lococo::server_detail {
namespace {

// Whether tokenising at line ends gives the whole text's ids, on text with the
// line ends, blank lines, indentation and spaces a prompt has.
bool cuts_at_line_ends_are_exact(const Tokenizer& tok) {
  const std::string a = "Call me Ishmael.\n", b = "\n  Some years ago - never mind how long\n", c = "\tprecisely.";
  std::vector<int64_t> parts = tok.encode(a);
  for (const auto* s : {&b, &c}) {
    const auto ids = tok.encode_after_line_end(*s);
    parts.insert(parts.end(), ids.begin(), ids.end());
  }
  return parts == tok.encode(a + b + c);
}

}  // namespace

PieceTokenCache::PieceTokenCache(const Tokenizer& tokenizer, int64_t capacity_tokens)
    : tokenizer_(tokenizer), capacity_(capacity_tokens), piecewise_(cuts_at_line_ends_are_exact(tokenizer)) {}

const std::vector<int64_t>& PieceTokenCache::piece_ids(const std::string& piece, bool first) {
  // The seed tells a text's first piece (tokenised alone) from a later one (after a line end).
  const uint64_t h = XXH64(piece.data(), piece.size(), piece.size() * 2 + (first ? 1 : 0));
  if (const auto it = by_hash_.find(h); it != by_hash_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);  // now the most recent
    return lru_.front().second;
  }
  lru_.emplace_front(h, first ? tokenizer_.encode(piece) : tokenizer_.encode_after_line_end(piece));
  by_hash_[h] = lru_.begin();
  held_ += static_cast<int64_t>(lru_.front().second.size());
  while (held_ > capacity_ && lru_.size() > 1) {
    held_ -= static_cast<int64_t>(lru_.back().second.size());
    by_hash_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return lru_.front().second;
}

std::optional<std::vector<int64_t>> PieceTokenCache::encode(const std::string& text,
                                                            const std::function<bool()>& keep_going) {
  if (!piecewise_ || static_cast<int64_t>(text.size()) < 4 * kPieceBytes) return tokenizer_.encode(text);
  std::istringstream in(text);
  TextPieces cut(in, kPieceBytes);
  std::vector<std::string> pieces(1);
  while (cut.next(pieces.back())) pieces.emplace_back();
  pieces.pop_back();
  for (size_t i = 0; i + 1 < pieces.size(); ++i)
    if (pieces[i].back() != '\n') return tokenizer_.encode(text);  // a line too long: cut at a space
  std::vector<int64_t> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (keep_going && !keep_going()) return std::nullopt;
    const auto& ids = piece_ids(pieces[i], i == 0);
    out.insert(out.end(), ids.begin(), ids.end());
  }
  return out;
}

}  // namespace lococo::server_detail
