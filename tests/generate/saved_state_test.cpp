// Saved states: a state written after a text and read back into a fresh cache
// continues with the very logits of the uninterrupted run, for every policy and
// both position schemes; states from another model or cache are refused by
// field; broken files give errors that name them.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "lococo/generate/saved_state.h"
#include "lococo/io/safetensors.h"
#include "lococo/kv/registry.h"
#include "test_util.h"

namespace lococo {
namespace {

namespace fs = std::filesystem;

class SavedStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = testing::tokenized_tiny_model(dir_.path() / "model");
    fp_ = model_fingerprint(*m_.model, *m_.tokenizer);
  }

  CacheOptions options(const std::string& policy, PositionMode positions) const {
    CacheOptions o;
    o.policy = policy;
    o.budget = 32;
    o.chunk = 16;
    o.buffer = 4;
    o.positions = positions;
    o.snapkv.observation_window = 4;
    o.lococo.local_window = 4;
    o.lococo.allow_untrained = true;
    o.lococo.seed = 5;
    return o;
  }

  // Logits [n, V] of `tokens` read by `cache` in chunks of the options' chunk.
  torch::Tensor read(KvCache& cache, const torch::Tensor& tokens, int64_t chunk) const {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> out;
    for (int64_t at = 0; at < tokens.size(0); at += chunk)
      out.push_back(m_.model->forward(tokens.narrow(0, at, std::min(chunk, tokens.size(0) - at)), &cache)[0]);
    return torch::cat(out);
  }

  testing::TempDir dir_;
  LoadedModel m_;
  std::string fp_;
};

TEST_F(SavedStateTest, ALoadedStateContinuesExactlyAsTheUninterruptedRun) {
  const auto tokens = testing::random_tokens(160, 512, 3);
  const auto first = tokens.narrow(0, 0, 96), rest = tokens.narrow(0, 96, 64);
  for (const auto& policy : cache_policy_names()) {
    for (const auto positions : {PositionMode::Absolute, PositionMode::Cache}) {
      SCOPED_TRACE(policy + (positions == PositionMode::Cache ? " cache" : " absolute"));
      const CacheOptions o = options(policy, positions);
      auto whole = make_cache(m_.model->config(), o);
      const auto expected = read(*whole, tokens, o.chunk);
      auto before = make_cache(m_.model->config(), o);
      const auto logits = read(*before, first, o.chunk);
      const auto file = dir_.path() / (policy + ".state");
      save_state(file, *before, o, fp_, "0123456789abcdef", 96, logits[-1]);
      // A fresh cache, as in a new process.
      const SavedState state = read_state(file);
      EXPECT_EQ(state.tokens, 96);
      auto after = make_cache(m_.model->config(), o);
      const auto last = restore_state(state, *after, o, fp_, m_.model->config().vocab_size);
      EXPECT_TRUE(torch::equal(last, logits[-1]));
      EXPECT_EQ(after->tokens_seen(), 96);
      for (int i = 0; i < after->num_layers(); ++i) EXPECT_EQ(after->slots(i), before->slots(i));
      EXPECT_TRUE(torch::equal(read(*after, rest, o.chunk), expected.narrow(0, 96, 64)));
    }
  }
}

TEST_F(SavedStateTest, ABoundedStatesSizeDoesNotGrowWithTheText) {
  const CacheOptions o = options("h2o", PositionMode::Cache);
  std::vector<uintmax_t> sizes;
  for (int64_t n : {128, 512}) {
    auto cache = make_cache(m_.model->config(), o);
    const auto logits = read(*cache, testing::random_tokens(n, 512, 4), o.chunk);
    const auto file = dir_.path() / fmt::format("{}.state", n);
    save_state(file, *cache, o, fp_, text_fingerprint({}), n, logits[-1]);
    sizes.push_back(fs::file_size(file));
  }
  EXPECT_EQ(sizes[0], sizes[1]);
}

TEST_F(SavedStateTest, AStateFromAnotherModelOrCacheIsRefusedByField) {
  const CacheOptions o = options("lococo", PositionMode::Cache);
  auto cache = make_cache(m_.model->config(), o);
  const auto logits = read(*cache, testing::random_tokens(64, 512, 5), o.chunk);
  const auto file = dir_.path() / "s.state";
  save_state(file, *cache, o, fp_, text_fingerprint({}), 64, logits[-1]);
  const SavedState state = read_state(file);
  const int64_t V = m_.model->config().vocab_size;
  auto refuse = [&](CacheOptions other, const std::string& model, const std::string& field) {
    auto c = make_cache(m_.model->config(), other);
    testing::expect_error([&] { restore_state(state, *c, other, model, V); }, {field});
  };
  CacheOptions budget = o;
  budget.budget = 48;
  refuse(budget, fp_, "budget");
  CacheOptions policy = o;
  policy.policy = "h2o";
  refuse(policy, fp_, "policy");
  CacheOptions positions = o;
  positions.positions = PositionMode::Absolute;
  refuse(positions, fp_, "positions");
  CacheOptions window = o;
  window.lococo.local_window = 8;
  refuse(window, fp_, "local_window");
  CacheOptions compressor = o;
  compressor.lococo.seed = 6;  // another (untrained) compressor
  refuse(compressor, fp_, "compressor");
  const auto other = testing::tokenized_tiny_model(dir_.path() / "other", /*seed=*/4);
  EXPECT_NE(model_fingerprint(*other.model, *other.tokenizer), fp_);
  refuse(o, model_fingerprint(*other.model, *other.tokenizer), "model");
}

TEST_F(SavedStateTest, BrokenFilesGiveErrorsNamingThem) {
  const CacheOptions o = options("snapkv", PositionMode::Cache);
  auto cache = make_cache(m_.model->config(), o);
  const auto logits = read(*cache, testing::random_tokens(64, 512, 6), o.chunk);
  const auto file = dir_.path() / "good.state";
  save_state(file, *cache, o, fp_, text_fingerprint({}), 64, logits[-1]);
  std::ifstream in(file, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Every truncation is an error naming the file, never a crash.
  for (size_t cut : {size_t{0}, size_t{7}, size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    const auto bad = dir_.path() / fmt::format("cut{}.state", cut);
    testing::write_bytes(bad, bytes.substr(0, cut));
    testing::expect_error([&] { read_state(bad); }, {bad.string()});
  }
  // A safetensors file that is not a state.
  const auto foreign = dir_.path() / "foreign.safetensors";
  save_safetensors(foreign, {{"x", torch::zeros({2})}}, {{"format", "pt"}});
  testing::expect_error([&] { read_state(foreign); }, {foreign.string(), "format"});
  // A state whose slots do not fit the cache: refused naming the tensor, the cache left empty.
  SavedState state = read_state(file);
  for (auto& [name, t] : state.snapshot.tensors)
    if (name == "layers.1.values") t = t.narrow(1, 0, t.size(1) - 1).clone();
  auto fresh = make_cache(m_.model->config(), o);
  testing::expect_error([&] { restore_state(state, *fresh, o, fp_, m_.model->config().vocab_size); },
                        {"layers.1.values"});
  EXPECT_EQ(fresh->tokens_seen(), 0);
  SavedState extra = read_state(file);
  extra.snapshot.tensors.emplace_back("layers.0.surprise", torch::zeros({1}));
  testing::expect_error([&] { restore_state(extra, *fresh, o, fp_, m_.model->config().vocab_size); },
                        {"layers.0.surprise"});
}

// The CLI: read a prompt and save; a new process loads the state and generates
// exactly what one uninterrupted run generates.
TEST(SavedStateCli, GenerateFromALoadedStateEqualsTheUninterruptedRun) {
  testing::TempDir dir;
  const auto state = dir.path() / "moby.state";
  const std::string flags = "--cache lococo --budget 128 --chunk 128 --temp 0 -n 24 --json";
  const std::string prompt = "-f " + (fs::path(LOCOCO_SOURCE_DIR) / "tests" / "data" / "moby-dick-test-slice.txt").string();
  std::string whole, saved, loaded;
  ASSERT_EQ(testing::run_cli("generate " + prompt + " " + flags, &whole), 0) << whole;
  ASSERT_EQ(testing::run_cli("generate " + prompt + " --cache lococo --budget 128 --chunk 128 -n 0 --save-state " +
                                 state.string(), &saved), 0) << saved;
  ASSERT_EQ(testing::run_cli("generate --load-state " + state.string() + " --temp 0 -n 24 --json", &loaded), 0)
      << loaded;
  const auto text = [](const std::string& out) {
    return nlohmann::json::parse(out.substr(out.rfind("{\"")))["text"].get<std::string>();
  };
  EXPECT_EQ(text(loaded), text(whole));
  EXPECT_FALSE(text(whole).empty());
  // A cache flag that contradicts the state is refused, naming it.
  std::string refused;
  EXPECT_NE(testing::run_cli("generate --load-state " + state.string() + " --budget 256 -n 1", &refused), 0);
  EXPECT_NE(refused.find("--budget"), std::string::npos) << refused;
}

}  // namespace
}  // namespace lococo
