// libFuzzer target: any bytes as a GGUF file whose tokenizer.ggml.* metadata
// is read into a tokenizer (llama.cpp's "llama" and "gpt2" kinds): it loads
// (then encodes and decodes a fixed text) or raises std::runtime_error /
// std::invalid_argument naming the problem; anything else is a finding.
#include "fuzz_input.h"
#include "lococo/io/gguf.h"
#include "lococo/tokenizer/gguf_vocab.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = fuzz_input_file(data, size, ".gguf");
  try {
    const lococo::GgufFile file(path);
    if (file.text("tokenizer.ggml.model", "") == "llama") {
      (void)lococo::tokenizer_from_gguf(file).serialize();  // the SentencePiece model our own code builds
      return 0;
    }
    const auto tok = lococo::load_gguf_tokenizer(file);
    const auto ids = tok->encode("Call me Ishmael. It's 42\n\n  caf\xc3\xa9", true);
    (void)tok->decode(ids);
  } catch (const std::runtime_error&) {
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
