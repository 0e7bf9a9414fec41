// libFuzzer target: any bytes as a tokenizer.json either load (then encode
// and decode a fixed text) or raise std::runtime_error / std::invalid_argument
// naming the problem; anything else is a finding.
#include <nlohmann/json.hpp>

#include "lococo/tokenizer/tokenizer_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const lococo::HfBpeTokenizer tok(j, "tokenizer.json");
    const auto ids = tok.encode("Call me Ishmael. It's 42\n\n  caf\xc3\xa9 <|endoftext|>", true);
    (void)tok.decode(ids);
    for (const int64_t id : ids) (void)tok.piece_text(id);
  } catch (const std::runtime_error&) {
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
