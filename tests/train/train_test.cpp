// Training machinery: schedule, checkpoints, resume equivalence, NaN detection.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "lococo/model/model_dir.h"
#include "lococo/train/pretrain.h"
#include "lococo/train/train.h"
#include "lococo/core/io_util.h"
#include "test_util.h"

namespace lococo {
namespace {

using testing::TempDir;

TEST(Schedule, WarmupThenCosineToMinRatio) {
  Schedule s{"cosine", 10, 110, 0.1};
  EXPECT_NEAR(s.factor(0), 0.1, 1e-12);
  EXPECT_NEAR(s.factor(9), 1.0, 1e-12);
  EXPECT_NEAR(s.factor(10), 1.0, 1e-12);
  EXPECT_NEAR(s.factor(60), 0.55, 1e-12);  // half way: (1 + 0.1) / 2
  EXPECT_NEAR(s.factor(110), 0.1, 1e-12);
  Schedule lin{"linear", 0, 100, 0.0};
  EXPECT_NEAR(lin.factor(50), 0.5, 1e-12);
  EXPECT_THROW(Schedule({"bogus", 0, 10, 0}).factor(5), std::invalid_argument);
}

TEST(Trainer, NoDecayForVectorsAndNamedNanGradient) {
  auto w = torch::randn({3, 3}).requires_grad_(true);
  auto b = torch::randn({3}).requires_grad_(true);
  auto groups = split_decay("m", {{"w", w}, {"b", b}}, 1.0, 0.1);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params[0].first, "w");
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  Trainer t(groups, OptimizerOptions{});
  (w.sum() * std::numeric_limits<float>::quiet_NaN() + b.sum()).backward();
  try {
    t.step(7);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("step 7"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
}

TEST(Trainer, CheckpointRoundTripAndCorruptFiles) {
  TempDir dir;
  auto w = torch::randn({4, 2}).requires_grad_(true);
  Trainer t(split_decay("m", {{"w", w}}, 1.0, 0.0), OptimizerOptions{});
  w.pow(2).sum().backward();
  t.step(0);
  t.save_checkpoint(dir / "ck", {{"step", 1}});
  auto saved = w.detach().clone();
  {
    torch::NoGradGuard g;
    w.zero_();
  }
  EXPECT_EQ(t.load_checkpoint(dir / "ck").at("step"), 1);
  EXPECT_TRUE(torch::equal(w.detach(), saved));
  // Mismatched shape.
  auto other = torch::randn({3}).requires_grad_(true);
  Trainer t2(split_decay("m", {{"w", other}}, 1.0, 0.0), OptimizerOptions{});
  EXPECT_THROW(t2.load_checkpoint(dir / "ck"), std::runtime_error);
  // Corrupt optimiser state.
  std::ofstream(dir / "ck" / "optimizer.pt") << "garbage";
  try {
    t.load_checkpoint(dir / "ck");
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.pt"), std::string::npos) << e.what();
  }
}

class PretrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = testing::tiny_config();
    config_.vocab_size = 512;
    init_model_dir(dir_ / "init", config_, 0);
    std::ofstream text(dir_ / "train.txt");
    for (int i = 0; i < 40; ++i)
      for (const auto& line : builtin_sample_text()) text << line << "\n";
  }
  PretrainOptions options(const std::string& out, int64_t steps) {
    PretrainOptions o;
    o.out = dir_ / out;
    o.tokenizer = dir_ / "init" / "tokenizer.model";
    o.data = {(dir_ / "train.txt").string()};
    o.steps = steps;
    o.batch = 2;
    o.seq_len = 160;
    o.passkey_rate = 0.5;
    o.eval_every = 0;
    o.save_every = 0;
    o.optim.lr = 3e-3;
    o.quiet = true;
    return o;
  }
  std::vector<double> losses(const std::string& out) {
    std::vector<double> l;
    std::ifstream in(dir_ / out / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) l.push_back(nlohmann::json::parse(line).at("loss"));
    return l;
  }
  TempDir dir_;
  ModelConfig config_;
};

TEST_F(PretrainTest, PasskeyRowsTakeTheirFillerFromTheTrainingText) {
  auto o = options("filler", 2);
  o.passkey_rate = 1.0;
  o.passkey_text_filler = 0.5;
  o.passkey_shuffled_filler = 0.5;
  const auto r = pretrain(config_, o);
  EXPECT_EQ(r.steps_done, 2);
  EXPECT_TRUE(std::isfinite(r.last_loss));
  o.passkey_text_filler = 0.7;
  o.passkey_shuffled_filler = 0.7;  // more than every row
  EXPECT_THROW(pretrain(config_, o), std::invalid_argument);
}

TEST_F(PretrainTest, LossFallsAndResumeEqualsUninterruptedRun) {
  torch::set_num_threads(1);  // bit-for-bit reproducible reductions
  pretrain(config_, options("full", 8));
  auto full = losses("full");
  ASSERT_EQ(full.size(), 8u);
  EXPECT_LT(full.back(), full.front());

  auto first = options("split", 8);
  first.stop_after = 3;  // as if interrupted after step 3
  EXPECT_TRUE(pretrain(config_, first).interrupted);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "split" / "model.safetensors"));
  // As if a crash came between the two renames of a checkpoint save: only .old is left.
  std::filesystem::rename(dir_ / "split" / "checkpoint", dir_ / "split" / "checkpoint.old");
  auto second = options("split", 8);
  second.resume = true;
  auto r = pretrain(config_, second);
  EXPECT_FALSE(r.interrupted);
  auto resumed = losses("split");
  ASSERT_EQ(resumed.size(), full.size());
  for (size_t i = 0; i < full.size(); ++i) EXPECT_NEAR(resumed[i], full[i], 1e-5) << "step " << i + 1;
  auto loaded = load_model_dir(dir_ / "split");
  EXPECT_EQ(loaded.model->config().num_layers, config_.num_layers);
  // Resuming a finished run keeps its checkpoint's step and its metrics.
  EXPECT_EQ(pretrain(config_, second).steps_done, 8);
  const auto state = nlohmann::json::parse(read_text_file(dir_ / "split" / "checkpoint" / "state.json"));
  EXPECT_EQ(state.at("step").get<int64_t>(), 8);
  EXPECT_EQ(losses("split").size(), 8u);
}

}  // namespace
}  // namespace lococo
