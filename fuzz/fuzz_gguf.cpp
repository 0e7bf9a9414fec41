// libFuzzer target: any bytes given to GgufFile either parse (and then every
// tensor reads) or raise std::runtime_error; anything else is a finding.
#include "fuzz_input.h"
#include "lococo/io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = fuzz_input_file(data, size, ".gguf");
  try {
    lococo::GgufFile file(path);
    for (const auto& t : file.tensors()) (void)file.tensor(t.name).sum();
  } catch (const std::runtime_error&) {
    // A clear refusal is the expected outcome for corrupt input.
  }
  return 0;
}
