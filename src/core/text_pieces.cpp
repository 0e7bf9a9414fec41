#include "lococo/core/text_pieces.h"

#include <filesystem>
#include <iostream>
#include <stdexcept>

#include <fmt/format.h>

namespace lococo {

TextPieces::TextPieces(const std::string& path, int64_t piece_bytes) : piece_bytes_(std::max<int64_t>(piece_bytes, 1)) {
  if (path == "-") {
    in_ = &std::cin;
    return;
  }
  file_ = std::make_unique<std::ifstream>(path, std::ios::binary);
  if (!*file_) throw std::runtime_error(fmt::format("{}: cannot open for reading", path));
  std::error_code ec;
  total_bytes_ = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  if (ec) total_bytes_ = 0;
  in_ = file_.get();
}

TextPieces::TextPieces(std::istream& in, int64_t piece_bytes) : in_(&in), piece_bytes_(std::max<int64_t>(piece_bytes, 1)) {}

bool TextPieces::next(std::string& piece) {
  std::string buf = std::move(carry_);
  carry_.clear();
  // Read until the buffer holds a piece's worth and a line end after it (or the input ends).
  std::string block(static_cast<size_t>(piece_bytes_), '\0');
  size_t cut = std::string::npos;
  while (true) {
    if (static_cast<int64_t>(buf.size()) >= piece_bytes_) {
      cut = buf.find('\n', static_cast<size_t>(piece_bytes_) - 1);
      // A line far longer than a piece: cut at a space instead.
      if (cut == std::string::npos && static_cast<int64_t>(buf.size()) >= 16 * piece_bytes_)
        cut = buf.rfind(' ', buf.size() - 1);
      if (cut != std::string::npos) break;
    }
    in_->read(block.data(), static_cast<std::streamsize>(block.size()));
    const auto got = in_->gcount();
    if (got <= 0) break;
    buf.append(block.data(), static_cast<size_t>(got));
  }
  if (cut != std::string::npos) {
    carry_ = buf.substr(cut + 1);
    buf.resize(cut + 1);
  }
  bytes_read_ += static_cast<int64_t>(buf.size());
  piece = std::move(buf);
  return !piece.empty();
}

}  // namespace lococo
