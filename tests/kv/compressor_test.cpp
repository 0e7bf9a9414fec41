// The LoCoCo compressor: the mixing matrix, a convolution checked by hand,
// gradients, files (round trip and clear errors on bad ones), and training
// through the cache (docs/DESIGN.md sections 4 and 9).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <unistd.h>

#include <gtest/gtest.h>

#include "kv/kv_test_support.h"
#include "lococo/kv/compressor.h"
#include "kv/lococo_cache.h"
#include "lococo/kv/lococo.h"
#include "lococo/io/safetensors.h"

namespace lococo {
namespace {

namespace fs = std::filesystem;
using testing::random_tokens;
using testing::tiny_config;
using testing::tiny_model;

CompressorOptions small_options() {
  CompressorOptions o;
  o.num_layers = 2;
  o.num_kv_heads = 2;
  o.head_dim = 8;
  o.budget = 16;
  o.keep_rate = 0.5;
  o.local_window = 2;
  o.kernel = 5;
  return o;
}

// A fresh directory per test, removed at the end.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("lococo_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// Expects `what` to throw std::runtime_error whose message names `file` and every one of `words`.
template <typename F>
void expect_file_error(F&& what, const fs::path& file, const std::vector<std::string>& words) {
  try {
    what();
    ADD_FAILURE() << "no exception for " << file;
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(file.string()), std::string::npos) << msg;
    for (const auto& w : words) EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
  }
}

struct Inputs {
  torch::Tensor keys, values, scores;  // [Hkv, L, d], [Hkv, L, d], [Hkv, L]
};

Inputs random_inputs(const CompressorOptions& o, int64_t L, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return {torch::randn({o.num_kv_heads, L, o.head_dim}, gen), torch::randn({o.num_kv_heads, L, o.head_dim}, gen),
          torch::rand({o.num_kv_heads, L}, gen)};
}

// ---------------------------------------------------------------------------
// The mixing

TEST(Compressor, ShapesAndMixingRowsSumToOne) {
  const CompressorOptions o = small_options();
  LococoCompressor c(o, 3);
  ASSERT_EQ(o.fused(), 8);
  ASSERT_EQ(o.kept(), 8);
  const int64_t L = 27;
  auto in = random_inputs(o, L, 4);
  torch::NoGradGuard no_grad;
  for (int layer = 0; layer < 2; ++layer) {
    CompressedSlots out = c.compress(layer, in.keys, in.values, in.scores);
    EXPECT_EQ(out.keys.sizes(), torch::IntArrayRef({2, 16, 8}));   // [Hkv, M, d]
    EXPECT_EQ(out.values.sizes(), torch::IntArrayRef({2, 16, 8}));
    EXPECT_EQ(out.scores.sizes(), torch::IntArrayRef({2, 16}));
    EXPECT_EQ(out.mixing.sizes(), torch::IntArrayRef({2, 8, L - 8}));  // [Hkv, m, S]
    EXPECT_TRUE(torch::allclose(out.mixing.sum(-1), torch::ones({2, 8}), 1e-5, 1e-6));
    EXPECT_GE(out.mixing.min().item<float>(), 0.0f);
    // The heavy hitters are copied verbatim, in cache order, the last w included.
    auto heavy = out.parts.heavy;  // [Hkv, keep]
    EXPECT_TRUE(torch::equal(std::get<0>(heavy.sort(1)), heavy));
    EXPECT_EQ(heavy.select(1, 7).min().item<int64_t>(), L - 1);
    EXPECT_EQ(heavy.select(1, 6).min().item<int64_t>(), L - 2);
    auto expected = in.keys.gather(1, heavy.unsqueeze(-1).expand({2, 8, 8}));
    EXPECT_TRUE(torch::equal(out.keys.narrow(1, 0, 8), expected));
  }
}

TEST(Compressor, ConvStackShapesWithExpandAndSeveralLayers) {
  CompressorOptions o = small_options();
  o.conv_layers = 3;
  o.expand = 2;
  o.activation = "gelu";
  LococoCompressor c(o, 1);
  const auto& convs = c.layer(1).convs;
  ASSERT_EQ(convs.size(), 3u);
  EXPECT_EQ(convs[0]->weight.sizes(), torch::IntArrayRef({16, 16, 5}));  // 2d -> m * expand
  EXPECT_EQ(convs[1]->weight.sizes(), torch::IntArrayRef({16, 16, 5}));
  EXPECT_EQ(convs[2]->weight.sizes(), torch::IntArrayRef({8, 16, 5}));   // -> m
  auto in = random_inputs(o, 30, 2);
  torch::NoGradGuard no_grad;
  auto out = c.compress(0, in.keys, in.values, in.scores);
  EXPECT_EQ(out.keys.sizes(), torch::IntArrayRef({2, 16, 8}));
  EXPECT_TRUE(torch::allclose(out.mixing.sum(-1), torch::ones({2, 8}), 1e-5, 1e-6));
}

// Slot features: a conv that reads only the fused marker (or only the score)
// puts all of P on the fused slots (or on the best-scored slot) of N.
TEST(Compressor, SlotFeaturesAreTheScoreAndTheFusedMarker) {
  CompressorOptions o = small_options();
  o.slot_features = true;
  o.activation = "none";
  ASSERT_EQ(o.input_channels(), 18);
  LococoCompressor c(o, 3);
  auto& conv = c.layer(0).convs[0];
  ASSERT_EQ(conv->weight.sizes(), torch::IntArrayRef({8, 18, 5}));
  const int64_t L = 27;
  auto in = random_inputs(o, L, 4);
  auto fused = torch::zeros({2, L}, torch::kBool);
  fused.narrow(1, 3, 4).fill_(true);  // slots 3..6: low scores, never heavy hitters
  in.scores.narrow(1, 3, 4).fill_(0.001);
  torch::NoGradGuard no_grad;
  c.layer(0).lambda.fill_(1.0);  // W = P
  conv->bias.zero_();
  for (const int feature : {17, 16}) {  // the marker, then the score
    conv->weight.zero_();
    conv->weight.select(1, feature).select(1, 2).fill_(feature == 17 ? 40.0 : 20.0);  // the kernel's centre tap
    const auto out = c.compress(0, in.keys, in.values, in.scores, fused);
    const auto on_rest = fused.gather(1, out.parts.rest).to(torch::kFloat32).unsqueeze(1);  // [H, 1, S]
    if (feature == 17) {
      EXPECT_TRUE(torch::allclose((out.mixing * on_rest).sum(-1), torch::ones({2, 8}), 1e-4, 1e-4));
    } else {
      const auto best = in.scores.gather(1, out.parts.rest).argmax(1);  // [H]
      for (int64_t h = 0; h < 2; ++h)
        EXPECT_EQ(out.mixing[h].argmax(-1).min().item<int64_t>(), best[h].item<int64_t>()) << "head " << h;
    }
  }
}

TEST(Compressor, SigmoidLambdaStartsAtTheInitialWeight) {
  CompressorOptions o = small_options();
  o.lambda_sigmoid = true;
  o.lambda_init = 0.8;
  LococoCompressor c(o, 1);
  EXPECT_NEAR(c.layer(0).lambda.item<double>(), std::log(4.0), 1e-6);  // the logit
  EXPECT_NEAR(c.layer(0).mix().item<double>(), 0.8, 1e-6);
  c.layer(0).lambda.detach().fill_(50.0);
  EXPECT_LE(c.layer(0).mix().item<double>(), 1.0);  // never past 1
  o.lambda_init = 1.0;
  EXPECT_THROW(LococoCompressor(o, 1), std::invalid_argument);
}

// One head, head_dim 1 (so 2 features: the key and the value), kernel 3, m = 1.
CompressorOptions hand_options() {
  CompressorOptions o;
  o.num_layers = 1;
  o.num_kv_heads = 1;
  o.head_dim = 1;
  o.budget = 2;
  o.keep_rate = 0.5;  // m = 1 fused slot, 1 heavy hitter
  o.kernel = 3;
  return o;
}

void set_hand_weights(LococoCompressor& c) {
  torch::NoGradGuard no_grad;
  auto& conv = c.layer(0).convs.at(0);
  conv->weight.copy_(torch::tensor({1.0f, 0.0f, -1.0f, 0.5f, 1.0f, 0.0f}).view({1, 2, 3}));  // [out, in, k]
  conv->bias.fill_(0.1);
}

TEST(Compressor, TinyConvComputedByHand) {
  LococoCompressor c(hand_options(), 0);
  set_hand_weights(c);
  // Feature 0 (key) = 1 2 0 -1 3, feature 1 (value) = 0 1 1 0 -2; zero padding 1 each side.
  auto x = torch::tensor({1.0f, 2.0f, 0.0f, -1.0f, 3.0f, 0.0f, 1.0f, 1.0f, 0.0f, -2.0f}).view({1, 2, 5});
  // z_t = 0.1 + (x0[t-1] - x0[t+1]) + (0.5 x1[t-1] + x1[t]):
  //   t=0: 0.1 + (0 - 2) + (0 + 0)     = -1.9 -> ReLU 0
  //   t=1: 0.1 + (1 - 0) + (0 + 1)     =  2.1
  //   t=2: 0.1 + (2 + 1) + (0.5 + 1)   =  4.6
  //   t=3: 0.1 + (0 - 3) + (0.5 + 0)   = -2.4 -> 0
  //   t=4: 0.1 + (-1 - 0) + (0 - 2)    = -2.9 -> 0
  const double z[5] = {0.0, 2.1, 4.6, 0.0, 0.0};
  double total = 0;
  for (double v : z) total += std::exp(v);
  torch::NoGradGuard no_grad;
  auto P = c.layer(0).fusion_weights(x);  // [1, 1, 5]
  ASSERT_EQ(P.sizes(), torch::IntArrayRef({1, 1, 5}));
  for (int t = 0; t < 5; ++t) EXPECT_NEAR(P[0][0][t].item<double>(), std::exp(z[t]) / total, 1e-6) << "t=" << t;

  // The whole compression on 6 slots: slot 0 scores highest and is the heavy
  // hitter; the other five are x; the best of them by score (slot 4, x index 3)
  // is R's one. Fused = 0.5 R + 0.5 P applied to keys and values.
  auto keys = torch::tensor({9.0f, 1.0f, 2.0f, 0.0f, -1.0f, 3.0f}).view({1, 6, 1});
  auto values = torch::tensor({8.0f, 0.0f, 1.0f, 1.0f, 0.0f, -2.0f}).view({1, 6, 1});
  auto scores = torch::tensor({5.0f, 0.1f, 0.2f, 0.3f, 0.9f, 0.4f}).view({1, 6});
  auto out = c.compress(0, keys, values, scores);
  const double x0[5] = {1, 2, 0, -1, 3}, x1[5] = {0, 1, 1, 0, -2};
  double k_fused = 0.5 * x0[3], v_fused = 0.5 * x1[3];
  for (int t = 0; t < 5; ++t) {
    k_fused += 0.5 * std::exp(z[t]) / total * x0[t];
    v_fused += 0.5 * std::exp(z[t]) / total * x1[t];
  }
  EXPECT_FLOAT_EQ(out.keys[0][0][0].item<float>(), 9.0f);
  EXPECT_FLOAT_EQ(out.values[0][0][0].item<float>(), 8.0f);
  EXPECT_NEAR(out.keys[0][1][0].item<double>(), k_fused, 1e-5);
  EXPECT_NEAR(out.values[0][1][0].item<double>(), v_fused, 1e-5);
}

TEST(Compressor, GradientsReachConvWeightsAndLambda) {
  CompressorOptions o = small_options();
  o.conv_layers = 2;
  LococoCompressor c(o, 6);
  auto in = random_inputs(o, 25, 7);
  auto out = c.compress(1, in.keys, in.values, in.scores);
  ASSERT_TRUE(out.keys.requires_grad());
  (out.keys.pow(2).sum() + out.values.sum()).backward();
  for (const auto& conv : c.layer(1).convs) {
    ASSERT_TRUE(conv->weight.grad().defined());
    EXPECT_GT(conv->weight.grad().abs().sum().item<double>(), 0.0);
    EXPECT_GT(conv->bias.grad().abs().sum().item<double>(), 0.0);
  }
  ASSERT_TRUE(c.layer(1).lambda.grad().defined());
  EXPECT_NE(c.layer(1).lambda.grad().item<double>(), 0.0);
  EXPECT_FALSE(c.layer(0).lambda.grad().defined());  // only the compressed layer
  EXPECT_FALSE(out.scores.requires_grad());
}

TEST(Compressor, ReferenceInitialisationIsSeeded) {
  const CompressorOptions o = small_options();
  LococoCompressor a(o, 11), b(o, 11), c(o, 12);
  auto w = a.layer(0).convs[0]->weight;
  EXPECT_TRUE(torch::equal(w, b.layer(0).convs[0]->weight));
  EXPECT_FALSE(torch::equal(w, c.layer(0).convs[0]->weight));
  EXPECT_NEAR(w.std().item<double>(), 1.0, 0.1);  // N(0, 1)
  EXPECT_EQ(a.layer(1).lambda.item<float>(), 0.5f);
  EXPECT_TRUE(a.layer(1).lambda.requires_grad());
}

// ---------------------------------------------------------------------------
// Files

TEST(CompressorFile, SaveLoadRoundTrip) {
  TempDir dir;
  CompressorOptions o = small_options();
  o.conv_layers = 2;
  o.expand = 3;
  o.activation = "silu";
  o.keep_rate = 0.3;
  o.slot_features = true;
  o.lambda_sigmoid = true;
  LococoCompressor c(o, 2);
  const auto file = dir / "c.safetensors";
  c.save(file);
  auto loaded = LococoCompressor::load(file);
  EXPECT_EQ(loaded->options().kernel, 5);
  EXPECT_EQ(loaded->options().conv_layers, 2);
  EXPECT_EQ(loaded->options().expand, 3);
  EXPECT_EQ(loaded->options().activation, "silu");
  EXPECT_EQ(loaded->options().keep_rate, 0.3);
  EXPECT_TRUE(loaded->options().slot_features);
  EXPECT_TRUE(loaded->options().lambda_sigmoid);
  EXPECT_EQ(loaded->options().fused(), c.options().fused());
  auto mine = c.named_parameters(), theirs = loaded->named_parameters();
  ASSERT_EQ(mine.size(), theirs.size());
  for (const auto& p : mine) EXPECT_TRUE(torch::equal(p.value(), theirs[p.key()])) << p.key();
  auto in = random_inputs(o, 20, 1);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(c.compress(0, in.keys, in.values, in.scores).keys,
                           loaded->compress(0, in.keys, in.values, in.scores).keys));
  // The metadata describes the file on its own.
  SafetensorsFile f(file);
  EXPECT_EQ(f.metadata().at("num_kv_heads"), "2");
  EXPECT_EQ(f.metadata().at("budget"), "16");
  EXPECT_TRUE(f.contains("layers.1.convs.1.weight"));
  EXPECT_TRUE(f.contains("layers.0.lambda"));
}

TEST(CompressorFile, MakeCacheLoadsTheCompressorFile) {
  TempDir dir;
  const ModelConfig config = tiny_config();
  CacheOptions cache = testing::bounded_options("lococo", 16, 4, 8);
  cache.lococo.allow_untrained = false;
  cache.lococo.local_window = 2;
  LococoCompressor c(CompressorOptions::from(config, cache), 4);
  cache.lococo.compressor = (dir / "c.safetensors").string();
  c.save(cache.lococo.compressor);
  auto made = make_cache(config, cache);
  auto& lococo = dynamic_cast<LococoCache&>(*made);
  ASSERT_TRUE(lococo.compressor());
  EXPECT_TRUE(torch::equal(lococo.compressor()->layer(1).convs[0]->weight, c.layer(1).convs[0]->weight));
}

TEST(CompressorFile, MismatchedModelOrCacheIsRefusedNamingTheField) {
  TempDir dir;
  const ModelConfig config = tiny_config();  // 2 layers, 2 KV heads, head_dim 8
  CacheOptions cache = testing::bounded_options("lococo", 16, 4, 8);
  cache.lococo.allow_untrained = false;
  struct Case {
    std::string field;
    std::function<void(CompressorOptions&)> tweak;
  };
  const std::vector<Case> cases = {
      {"num_layers", [](CompressorOptions& o) { o.num_layers = 3; }},
      {"num_kv_heads", [](CompressorOptions& o) { o.num_kv_heads = 4; }},
      {"head_dim", [](CompressorOptions& o) { o.head_dim = 16; }},
      {"budget", [](CompressorOptions& o) { o.budget = 32; }},
      {"keep_rate", [](CompressorOptions& o) { o.keep_rate = 0.25; }},
      {"local_window", [](CompressorOptions& o) { o.local_window = 1; }},
  };
  for (const auto& k : cases) {
    CompressorOptions o = CompressorOptions::from(config, cache);
    k.tweak(o);
    const auto file = dir / (k.field + ".safetensors");
    LococoCompressor(o, 0).save(file);
    cache.lococo.compressor = file.string();
    expect_file_error([&] { make_cache(config, cache); }, file, {k.field});
    // Handed over in memory, the same mismatch is a caller mistake.
    EXPECT_THROW(LococoCache(config, testing::bounded_options("lococo", 16, 4, 8),
                             std::make_shared<LococoCompressor>(o, 0)),
                 std::invalid_argument);
  }
}

TEST(CompressorFile, BadFilesGiveClearErrors) {
  TempDir dir;
  const CompressorOptions o = small_options();
  LococoCompressor c(o, 0);
  NamedTensors tensors;
  for (const auto& p : c.named_parameters()) tensors.emplace_back(p.key(), p.value().detach().clone());
  std::map<std::string, std::string> meta;
  {
    const auto good = dir / "good.safetensors";
    c.save(good);
    meta = SafetensorsFile(good).metadata();
  }
  auto write = [&](const std::string& name, const NamedTensors& t, const std::map<std::string, std::string>& m) {
    const auto file = dir / name;
    save_safetensors(file, t, m);
    return file;
  };

  auto no_meta = write("no_meta.safetensors", tensors, {});
  expect_file_error([&] { LococoCompressor::load(no_meta); }, no_meta, {"format"});

  auto partial = meta;
  partial.erase("kernel");
  auto no_kernel = write("no_kernel.safetensors", tensors, partial);
  expect_file_error([&] { LococoCompressor::load(no_kernel); }, no_kernel, {"kernel"});

  auto garbled = meta;
  garbled["budget"] = "sixteen";
  auto bad_number = write("bad_number.safetensors", tensors, garbled);
  expect_file_error([&] { LococoCompressor::load(bad_number); }, bad_number, {"budget", "sixteen"});

  auto even = meta;
  even["kernel"] = "4";
  auto even_kernel = write("even_kernel.safetensors", tensors, even);
  expect_file_error([&] { LococoCompressor::load(even_kernel); }, even_kernel, {"kernel"});

  auto reshaped = tensors;
  for (auto& [name, t] : reshaped)
    if (name == "layers.1.convs.0.weight") t = torch::zeros({8, 16, 3});  // kernel 3 where the metadata says 5
  auto wrong_shape = write("wrong_shape.safetensors", reshaped, meta);
  expect_file_error([&] { LococoCompressor::load(wrong_shape); }, wrong_shape,
                    {"layers.1.convs.0.weight", "[8, 16, 3]", "[8, 16, 5]"});

  auto fewer = NamedTensors(tensors.begin() + 1, tensors.end());
  auto missing = write("missing.safetensors", fewer, meta);
  expect_file_error([&] { LococoCompressor::load(missing); }, missing, {tensors[0].first, "missing"});

  auto more = tensors;
  more.emplace_back("layers.9.lambda", torch::zeros({1}));
  auto extra = write("extra.safetensors", more, meta);
  expect_file_error([&] { LococoCompressor::load(extra); }, extra, {"layers.9.lambda"});

  const auto junk = dir / "junk.safetensors";
  std::ofstream(junk) << "this is not a safetensors file";
  expect_file_error([&] { LococoCompressor::load(junk); }, junk, {});

  const auto absent = dir / "absent.safetensors";
  expect_file_error([&] { LococoCompressor::load(absent); }, absent, {});
}

// ---------------------------------------------------------------------------
// Through the model

// Training (reference "inference mode"): frozen model, gradients reach the conv
// and lambda through the next chunk's attention over the freshly fused slots.
TEST(LococoTraining, GradientsFlowThroughTheCacheToTheCompressor) {
  auto model = tiny_model(2, 4.0);
  const ModelConfig& config = model->config();
  CacheOptions o = testing::bounded_options("lococo", 16, 4, 16);
  auto compressor = std::make_shared<LococoCompressor>(CompressorOptions::from(config, o), 3);
  LococoCache cache(config, o, compressor);
  auto tokens = random_tokens(64, 5);
  torch::Tensor logits;
  for (int chunk = 0; chunk < 3; ++chunk) logits = model->forward(tokens.narrow(0, 16 * chunk, 16), &cache);
  // The third chunk compressed 32 slots to 16 first: its attention saw fused slots.
  EXPECT_EQ(cache.slots(0), 32);
  ASSERT_TRUE(logits.requires_grad());
  torch::nn::functional::cross_entropy(logits[0].narrow(0, 0, 15), tokens.narrow(0, 33, 15)).backward();
  for (int i = 0; i < config.num_layers; ++i) {
    const auto& l = compressor->layer(i);
    ASSERT_TRUE(l.lambda.grad().defined()) << "layer " << i;
    EXPECT_NE(l.lambda.grad().item<double>(), 0.0);
    EXPECT_GT(l.convs[0]->weight.grad().abs().sum().item<double>(), 0.0);
  }
  // The stored cache stays detached, and the next chunk runs without the old graph.
  EXPECT_FALSE(cache.stored(0).keys.requires_grad());
  EXPECT_NO_THROW(model->forward(tokens.narrow(0, 48, 16), &cache).sum().backward());
}

TEST(LococoTraining, NoGradientsWithoutGradMode) {
  auto model = tiny_model();
  CacheOptions o = testing::bounded_options("lococo", 16, 4, 16);
  auto cache = make_cache(model->config(), o);
  torch::NoGradGuard no_grad;
  torch::Tensor logits;
  for (int chunk = 0; chunk < 4; ++chunk) logits = model->forward(random_tokens(16, chunk), cache.get());
  EXPECT_FALSE(logits.requires_grad());
}

}  // namespace
}  // namespace lococo
