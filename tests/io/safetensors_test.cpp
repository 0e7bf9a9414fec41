// safetensors reading/writing, model directory loading, and the errors bad files give.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lococo/model/model_dir.h"
#include "lococo/io/safetensors.h"
#include "test_util.h"

namespace lococo {
namespace {

using testing::TempDir;
using testing::expect_error;
using testing::write_bytes;

// A file built byte by byte: 8-byte length, JSON header, data.
std::string hand_made_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string float_bytes(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.begin(), s.size());
  return s;
}

TEST(Safetensors, RoundTripIsBitExact) {
  TempDir dir;
  NamedTensors in = {{"a", torch::randn({3, 4})},
                     {"b", torch::randn({5}).to(torch::kBFloat16)},
                     {"c", torch::randn({2, 2, 2}).to(torch::kFloat16)},
                     {"d", torch::arange(7, torch::kInt64)},
                     {"empty", torch::empty({0, 3})}};
  save_safetensors(dir / "t.safetensors", in, {{"k", "v"}});
  SafetensorsFile f(dir / "t.safetensors");
  EXPECT_EQ(f.metadata().at("k"), "v");
  EXPECT_EQ(f.names().size(), in.size());
  for (const auto& [name, t] : in) {
    auto back = f.tensor(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    ASSERT_EQ(back.sizes(), t.sizes()) << name;
    EXPECT_EQ(std::memcmp(back.contiguous().data_ptr(), t.contiguous().data_ptr(), t.numel() * t.element_size()), 0)
        << name;
  }
}

TEST(Safetensors, ReadsAHandWrittenFile) {
  TempDir dir;
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"x":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}})";
  write_bytes(dir / "h.safetensors", hand_made_file(header, float_bytes({1.f, 2.f, 3.f, 4.f, -0.5f})));
  SafetensorsFile f(dir / "h.safetensors");
  auto w = f.tensor("w");
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_FLOAT_EQ(w[1][0].item<float>(), 3.f);
  EXPECT_FLOAT_EQ(f.tensor("x")[0].item<float>(), -0.5f);
}

TEST(Safetensors, BadFilesNameTheFileAndTheProblem) {
  TempDir dir;
  auto path = dir / "bad.safetensors";
  const std::string file = path.string();
  write_bytes(path, "abc");
  expect_error([&] { SafetensorsFile f(path); }, {file, "truncated"});
  write_bytes(path, hand_made_file("", "").substr(0, 8) + "xx");  // length 0 header, then junk
  expect_error([&] { SafetensorsFile f(path); }, {file, "JSON"});
  std::string big(8, '\0');
  big[0] = 100;
  write_bytes(path, big + "{}");
  expect_error([&] { SafetensorsFile f(path); }, {file, "past end of file"});
  write_bytes(path, hand_made_file("{not json", ""));
  expect_error([&] { SafetensorsFile f(path); }, {file, "not valid JSON"});
  write_bytes(path, hand_made_file(R"({"w":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}})", float_bytes({1})));
  expect_error([&] { SafetensorsFile f(path); }, {file, "'w'", "unknown dtype"});
  write_bytes(path, hand_made_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", float_bytes({1})));
  expect_error([&] { SafetensorsFile f(path); }, {file, "'w'", "outside the data section"});
  write_bytes(path, hand_made_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", float_bytes({1, 2})));
  expect_error([&] { SafetensorsFile f(path); }, {file, "'w'", "shape x dtype"});
  write_bytes(path, hand_made_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                   float_bytes({1, 2, 3})));
  expect_error([&] { SafetensorsFile f(path); }, {file, "overlap", "'a'", "'b'"});
  // Numbers that are not non-negative integers, and shapes whose element count overflows.
  write_bytes(path, hand_made_file(R"({"w":{"dtype":"F32","shape":[1.6e25],"data_offsets":[0,4]}})", float_bytes({1})));
  expect_error([&] { SafetensorsFile f(path); }, {file, "'w'", "shape entry", "not a non-negative integer"});
  write_bytes(path, hand_made_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", float_bytes({1})));
  expect_error([&] { SafetensorsFile f(path); }, {file, "'w'", "not a non-negative integer"});
  write_bytes(path, hand_made_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", ""));
  expect_error([&] { SafetensorsFile f(path); }, {file, "'w'", "more elements than the data section"});
  write_bytes(path, hand_made_file(R"({"w":{"dtype":"F32","shape":[1e999],"data_offsets":[0,4]}})", float_bytes({1})));
  expect_error([&] { SafetensorsFile f(path); }, {file, "not valid JSON", "number overflow"});
  write_bytes(path, hand_made_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}})", float_bytes({1})));
  expect_error([&] { SafetensorsFile f(path); }, {file, "'w'", "data_offsets entry"});
  write_bytes(path, hand_made_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", float_bytes({1})));
  expect_error([&] { SafetensorsFile(path).tensor("zz"); }, {file, "missing tensor 'zz'"});
}

class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = testing::tiny_config();
    config_.vocab_size = 512;
    init_model_dir(dir_.path(), config_, 7);
  }
  TempDir dir_;
  ModelConfig config_;
};

TEST_F(ModelDirTest, SavedModelLoadsWithIdenticalWeights) {
  LoadedModel m = load_model_dir(dir_.path());
  LlamaWeights fresh = init_weights(config_, 7);
  auto& loaded = const_cast<LlamaWeights&>(m.model->weights());
  auto a = loaded.named(config_);
  auto b = fresh.named(config_);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(*a[i].second, *b[i].second)) << a[i].first;
  // The tokenizer round-trips text.
  const std::string text = "Call me Ishmael. The pass key is 12345.";
  EXPECT_EQ(m.tokenizer->decode(m.tokenizer->encode(text)), text);
}

TEST_F(ModelDirTest, ShardedCheckpointLoads) {
  SafetensorsFile whole(dir_ / "model.safetensors");
  NamedTensors s1, s2;
  nlohmann::json map;
  int i = 0;
  for (const auto& name : whole.names()) {
    (i++ % 2 ? s1 : s2).emplace_back(name, whole.tensor(name).clone());
    map[name] = i % 2 ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  save_safetensors(dir_ / "model-00001-of-00002.safetensors", s1);
  save_safetensors(dir_ / "model-00002-of-00002.safetensors", s2);
  std::ofstream(dir_ / "model.safetensors.index.json") << nlohmann::json{{"weight_map", map}}.dump();
  LoadedModel ref = load_model_dir(dir_.path());
  std::filesystem::remove(dir_ / "model.safetensors");
  LoadedModel sharded = load_model_dir(dir_.path());
  auto tokens = testing::random_tokens(9, 512);
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::equal(sharded.model->forward(tokens, nullptr), ref.model->forward(tokens, nullptr)));
}

TEST_F(ModelDirTest, MissingTensorIsNamed) {
  SafetensorsFile whole(dir_ / "model.safetensors");
  NamedTensors keep;
  for (const auto& name : whole.names())
    if (name != "model.layers.1.mlp.up_proj.weight") keep.emplace_back(name, whole.tensor(name).clone());
  save_safetensors(dir_ / "model.safetensors", keep);
  expect_error([&] { load_model_dir(dir_.path()); }, {"model.safetensors", "model.layers.1.mlp.up_proj.weight"});
}

TEST_F(ModelDirTest, ShapeDisagreeingWithConfigIsNamed) {
  auto c = nlohmann::json::parse(std::ifstream(dir_ / "config.json"));
  c["intermediate_size"] = 50;
  std::ofstream(dir_ / "config.json") << c.dump();
  expect_error([&] { load_model_dir(dir_.path()); }, {"model.safetensors", "gate_proj", "config.json"});
}

TEST_F(ModelDirTest, BadConfigJsonIsNamed) {
  std::ofstream(dir_ / "config.json") << "{\"hidden_size\": 32,";
  expect_error([&] { load_model_dir(dir_.path()); }, {"config.json", "invalid JSON"});
  std::ofstream(dir_ / "config.json") << R"({"architectures": ["GPT2LMHeadModel"], "vocab_size": 5})";
  expect_error([&] { load_model_dir(dir_.path()); }, {"config.json", "unsupported architecture"});
  std::ofstream(dir_ / "config.json") << R"({"vocab_size": "many"})";
  expect_error([&] { load_model_dir(dir_.path()); }, {"config.json", "vocab_size"});
}

TEST_F(ModelDirTest, CliPrintsOneLineAndFailsOnATruncatedFile) {
  const auto file = dir_ / "model.safetensors";
  const auto size = std::filesystem::file_size(file);
  std::filesystem::resize_file(file, size / 2);
  std::string out;
  const int rc = testing::run_cli("info " + dir_.path().string(), &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("model.safetensors"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST(Cli, InvalidFlagsFailWithAClearLine) {
  std::string out;
  EXPECT_NE(testing::run_cli("generate --budget -3", &out), 0);
  EXPECT_NE(out.find("--budget"), std::string::npos) << out;
  EXPECT_NE(testing::run_cli("generate --cache nonsense", &out), 0);
  EXPECT_NE(out.find("--cache"), std::string::npos) << out;
  EXPECT_NE(testing::run_cli("perplexity --model /nonexistent/dir --file x", &out), 0);
  EXPECT_NE(out.find("/nonexistent/dir"), std::string::npos) << out;
  EXPECT_EQ(testing::run_cli("generate --help", &out), 0);
  EXPECT_NE(out.find("--max-tokens"), std::string::npos);
}

}  // namespace
}  // namespace lococo
