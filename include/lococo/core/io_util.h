// Small file helpers shared by every writer and reader: atomic writes and
// whole-file reads with errors that name the file.
#pragma once

#include <filesystem>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lococo {

// Writes `path` atomically and durably: `write` fills a temporary file beside
// it, which is flushed to disk (fsync), renamed over `path`, and the directory
// synced, so readers never see a half-written file and a crash or power loss
// leaves the old file or the new one. A full disk is a std::runtime_error
// naming the file; the old file stays.
void write_file_atomic(const std::filesystem::path& path,
                       const std::function<void(std::ostream&)>& write);
// fsync of a file or directory; std::runtime_error naming it when that fails.
void sync_path(const std::filesystem::path& path);
void write_text_atomic(const std::filesystem::path& path, const std::string& text);

// A report directory's report.json (pretty-printed) and report.md, each written
// atomically (the directory is created). Returns the two paths.
std::vector<std::filesystem::path> write_json_and_markdown(const std::filesystem::path& dir, const nlohmann::json& json,
                                                           const std::string& markdown);

// Maps a whole non-empty file into memory, private copy-on-write, so in-place
// tensor ops on a view never touch the file; unmapped when the last owner goes.
// Throws std::runtime_error naming the file.
std::shared_ptr<void> map_file_private(const std::filesystem::path& path, uint64_t& size);

// Parses JSON text; throws std::runtime_error "<source>: invalid JSON at byte N"
// (or naming the number that does not fit) instead of nlohmann's exceptions.
nlohmann::json parse_json(const std::string& text, const std::string& source);
// One line of JSON; strings that are not valid UTF-8 (generated text cut
// inside a character) have those bytes replaced by U+FFFD instead of throwing.
std::string to_json_line(const nlohmann::json& j);

// Reads a whole file; throws std::runtime_error naming the file.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace lococo
