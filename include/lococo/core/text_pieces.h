// A text file (or stdin) read in pieces of about `piece_bytes`, each ending at
// a line end (or, for a line longer than 16 pieces, at a space), so that
// tokenising the first piece with Tokenizer::encode() and the others with
// Tokenizer::encode_after_line_end() gives the whole text's tokens while memory
// stays bounded by the piece size (a cut at a space can differ there).
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>

namespace lococo {

class TextPieces {
 public:
  // "-" reads stdin. Throws std::runtime_error naming the file when it cannot be opened.
  explicit TextPieces(const std::string& path, int64_t piece_bytes = 1 << 14);
  // Pieces of a stream the caller keeps alive (e.g. an std::istringstream).
  TextPieces(std::istream& in, int64_t piece_bytes);
  // The next piece (never empty) or false at the end.
  bool next(std::string& piece);
  int64_t bytes_read() const { return bytes_read_; }
  int64_t total_bytes() const { return total_bytes_; }  // 0 when unknown (stdin)

 private:
  std::unique_ptr<std::ifstream> file_;
  std::istream* in_ = nullptr;
  int64_t piece_bytes_;
  int64_t bytes_read_ = 0, total_bytes_ = 0;
  std::string carry_;  // read past the last cut, for the next piece
};

}  // namespace lococo
