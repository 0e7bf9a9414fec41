// libFuzzer target: any bytes given to SafetensorsFile either parse (and then
// every tensor reads) or raise std::runtime_error; anything else is a finding.
#include "fuzz_input.h"
#include "lococo/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = fuzz_input_file(data, size, ".safetensors");
  try {
    lococo::SafetensorsFile file(path);
    for (const auto& name : file.names()) {
      const auto t = file.tensor(name);
      if (t.is_floating_point()) (void)t.sum();
    }
  } catch (const std::runtime_error&) {
    // A clear refusal is the expected outcome for corrupt input.
  }
  return 0;
}
