// File helpers: JSON output never throws on text that is not valid UTF-8;
// atomic writes survive a full disk.
#include <csignal>
#include <filesystem>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "lococo/core/io_util.h"

namespace lococo {
namespace {

TEST(JsonLine, InvalidUtf8IsReplacedNotThrown) {
  nlohmann::json j = {{"text", std::string("ok \xE2\x82")}};  // a euro sign cut after two of its three bytes
  EXPECT_THROW(j.dump(), nlohmann::json::type_error);
  const std::string line = to_json_line(j);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const auto back = nlohmann::json::parse(line);
  EXPECT_EQ(back["text"].get<std::string>().substr(0, 3), "ok ");
  EXPECT_NE(back["text"].get<std::string>().find("\xEF\xBF\xBD"), std::string::npos);  // U+FFFD
}

// A write that runs out of space (here: past RLIMIT_FSIZE, in a child process
// so the limit stays there) fails with an error naming the file and leaves the
// previous file whole, with no temporary file behind.
TEST(AtomicWrite, AFullDiskKeepsThePreviousFile) {
  const auto dir = std::filesystem::temp_directory_path() / ("lococo-full-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "checkpoint.json";
  write_text_atomic(file, "previous");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG instead of killing the process
    const rlimit limit{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    try {
      write_text_atomic(file, std::string(1 << 20, 'x'));
    } catch (const std::runtime_error& e) {
      ::_exit(std::string(e.what()).find(file.string()) != std::string::npos ? 0 : 2);
    }
    ::_exit(1);  // no error: wrong
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the write did not fail; 2: the error did not name the file";
  EXPECT_EQ(read_text_file(file), "previous");
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) entries += e.is_regular_file();
  EXPECT_EQ(entries, 1);  // the temporary file is gone
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace lococo
