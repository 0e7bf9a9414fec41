// Incremental detokenising: the text of a growing token stream equals the
// whole stream decoded at once, for a fraction of the decoding work.
#include <gtest/gtest.h>

#include "lococo/generate/generate.h"
#include "test_util.h"

namespace lococo {
namespace {

// Forwards to a real tokenizer and counts the ids it is asked to decode.
class CountingTokenizer final : public Tokenizer {
 public:
  explicit CountingTokenizer(const Tokenizer& inner) : inner_(inner) {}
  std::vector<int64_t> encode(const std::string& text, bool add_bos) const override { return inner_.encode(text, add_bos); }
  std::string decode(const std::vector<int64_t>& ids) const override {
    decoded_ += static_cast<int64_t>(ids.size());
    return inner_.decode(ids);
  }
  std::string piece_text(int64_t id) const override { return inner_.piece_text(id); }
  int64_t vocab_size() const override { return inner_.vocab_size(); }
  int64_t bos_id() const override { return inner_.bos_id(); }
  int64_t eos_id() const override { return inner_.eos_id(); }
  int64_t decoded() const { return decoded_; }

 private:
  const Tokenizer& inner_;
  mutable int64_t decoded_ = 0;
};

TEST(IncrementalDetokenizer, EqualsWholeDecodeInLinearWork) {
  testing::TempDir dir;
  const LoadedModel m = testing::tokenized_tiny_model(dir.path());
  const std::string text =
      "Call me Ishmael. Some years ago - never mind how long precisely - having little or no money in my purse, "
      "and nothing particular to interest me on shore, I thought I would sail about a little.";
  std::vector<int64_t> ids = m.tokenizer->encode(text);
  // Random ids too: pieces that do not join into words, byte pieces.
  const auto noise = testing::random_tokens(200, m.tokenizer->vocab_size(), 9);
  for (int64_t i = 0; i < noise.size(0); ++i) ids.push_back(noise[i].item<int64_t>());
  CountingTokenizer counting(*m.tokenizer);
  IncrementalDetokenizer detok(counting);
  std::vector<int64_t> so_far;
  for (int64_t id : ids) {
    detok.push(id);
    so_far.push_back(id);
    const std::string whole = m.tokenizer->decode(so_far);
    ASSERT_EQ(whole.compare(0, detok.text().size(), detok.text()), 0) << "committed text is not a prefix";
    ASSERT_EQ(detok.text_with_pending(), whole);
  }
  // Each new token decodes a window of a few tokens, not the whole stream.
  EXPECT_LT(counting.decoded(), 8 * static_cast<int64_t>(ids.size()));
}

}  // namespace
}  // namespace lococo
