// LoRA: a fresh adapter changes nothing; merging gives the same logits.
#include <gtest/gtest.h>

#include "lococo/model/lora.h"
#include "lococo/model/model_dir.h"
#include "test_util.h"

namespace lococo {
namespace {

TEST(Lora, FreshAdapterLeavesOutputsUnchanged) {
  auto model = testing::random_model(testing::tiny_config(), 4);
  auto tokens = testing::random_tokens(20, 64, 1);
  torch::Tensor before;
  {
    torch::NoGradGuard g;
    before = model.forward(tokens, nullptr);
  }
  auto adapters = attach_lora(model, LoraOptions{});
  EXPECT_EQ(adapters.size(), 2u * 4 * model.config().num_layers);
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::equal(model.forward(tokens, nullptr), before));
}

TEST(Lora, MergedModelGivesTheSameLogits) {
  testing::TempDir dir;
  auto model = testing::random_model(testing::tiny_config(), 5);
  auto adapters = attach_lora(model, LoraOptions{4, 8.0, {"q", "v", "o"}, 1});
  {
    torch::NoGradGuard g;  // a trained-looking adapter: B no longer zero
    for (auto& [n, t] : adapters)
      if (n.back() == 'B') t.normal_(0.0, 0.2);
  }
  auto tokens = testing::random_tokens(30, 64, 2);
  torch::NoGradGuard g;
  auto unmerged = model.forward(tokens, nullptr);
  merge_lora(model);
  EXPECT_TRUE(lora_tensors(model).empty());
  testing::expect_close(model.forward(tokens, nullptr), unmerged, 1e-5);
  // Exported and reloaded as a plain model directory.
  save_model_dir(dir.path(), model);
  LlamaModel reloaded(model.config(), load_weights(dir.path(), model.config()));
  testing::expect_close(reloaded.forward(tokens, nullptr), unmerged, 1e-5);
}

TEST(Lora, RejectsBadOptions) {
  auto model = testing::random_model(testing::tiny_config(), 6);
  EXPECT_THROW(attach_lora(model, LoraOptions{0, 16.0, {"q"}, 0}), std::invalid_argument);
  EXPECT_THROW(attach_lora(model, LoraOptions{8, 16.0, {"gate"}, 0}), std::invalid_argument);
}

}  // namespace
}  // namespace lococo
