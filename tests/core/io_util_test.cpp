// JSON output never throws on text that is not valid UTF-8.
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

}  // namespace
}  // namespace lococo
