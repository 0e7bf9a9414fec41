// libFuzzer target: any bytes as a model's config.json either give a valid
// ModelConfig or raise std::runtime_error / std::invalid_argument naming the
// problem; anything else (another exception, a crash) is a finding.
#include <nlohmann/json.hpp>

#include "lococo/core/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // not JSON: the loader's parse refuses it by name before this
  try {
    const lococo::ModelConfig c = lococo::ModelConfig::from_json(j, "config.json");
    (void)c.kv_bytes_per_token(4);
  } catch (const std::runtime_error&) {
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
