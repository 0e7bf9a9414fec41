// libFuzzer target: any bytes given to read_state (a saved cache state, as
// `generate --load-state`, `chat --load` and the server's slot files read
// them) either parse or raise std::runtime_error; anything else is a finding.
#include "fuzz_input.h"
#include "lococo/generate/saved_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = fuzz_input_file(data, size, ".state");
  try {
    const lococo::SavedState s = lococo::read_state(path);
    for (const auto& [name, t] : s.snapshot.tensors)
      if (t.is_floating_point()) (void)t.sum();
    (void)s.bytes();
  } catch (const std::runtime_error&) {
    // A clear refusal is the expected outcome for corrupt input.
  }
  return 0;
}
