// libFuzzer target: any bytes as a token cache file (<cache>/<name>.tokens)
// give its ids, each in [0, vocab), or nothing (then the text is tokenised
// again); never a crash or an allocation the file's size does not back.
#include "fuzz_input.h"
#include "lococo/tokenizer/token_data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = fuzz_input_file(data, size, ".tokens");
  const nlohmann::json key = {{"sources", nlohmann::json::array()}, {"tokenizer", "fuzz"}};
  const torch::Tensor ids = lococo::read_token_file(path, key, 512);
  if (ids.defined() && ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= 512))
    __builtin_trap();  // an id outside the vocabulary got through
  return 0;
}
