// Helpers shared by the tests: tiny model configs, random models, temp dirs.
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "lococo/core/config.h"
#include "lococo/model/model.h"
#include "lococo/model/model_dir.h"
#include "lococo/train/train_compressor.h"
#include "lococo/model/weights.h"

namespace lococo::testing {

// A tiny Llama: 2 layers, hidden 32, 4 query heads, 2 KV heads, vocab 64.
inline ModelConfig tiny_config(int64_t heads = 4, int64_t kv_heads = 2) {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = 32 / heads;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 512;
  return c;
}

// Weights with a larger spread than the 0.02 default so that attention is not
// uniform and comparisons are meaningful.
inline LlamaModel random_model(const ModelConfig& c, uint64_t seed = 0, double scale = 0.3) {
  LlamaWeights w = init_weights(c, seed);
  torch::NoGradGuard g;
  auto gen = at::detail::createCPUGenerator(seed + 1000);
  for (auto& [name, t] : w.named(c))
    if (name.find("norm") == std::string::npos) t->copy_(at::normal(0.0, scale, t->sizes(), gen));
  return LlamaModel(c, std::move(w));
}

// A random tiny model with a real SentencePiece tokenizer (vocab 512), written
// to `dir` and loaded back.
inline LoadedModel tokenized_tiny_model(const std::filesystem::path& dir, uint64_t seed = 3) {
  auto c = tiny_config();
  c.vocab_size = 512;
  init_model_dir(dir, c, seed);
  return load_model_dir(dir);
}

inline torch::Tensor random_tokens(int64_t n, int64_t vocab, uint64_t seed = 0) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randint(vocab, {n}, gen, torch::kInt64);
}

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("lococo-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& s) const { return path_ / s; }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Expects a runtime_error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const std::exception& e) {  // runtime_error for bad input, invalid_argument for bad requests
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

// Runs the lococo CLI; returns the exit code and fills the combined output.
inline int run_cli(const std::string& args, std::string* output) {
  const std::string cmd = std::string(LOCOCO_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline void expect_close(const torch::Tensor& a, const torch::Tensor& b, double rtol, double atol = 1e-6) {
  ASSERT_EQ(a.sizes(), b.sizes());
  const double diff = (a - b).abs().max().item<double>();
  const double ref = b.abs().max().item<double>();
  EXPECT_LE(diff, atol + rtol * ref) << "max abs diff " << diff << " vs max |ref| " << ref;
}

// Compressor training at test sizes: budget = chunk = M, buffer M / 4, a
// constant learning rate large enough to move in a few steps, no progress bar.
inline CompressorTrainOptions small_compressor_options(const std::filesystem::path& out, int64_t budget,
                                                       int64_t kernel, int64_t segments, int64_t steps) {
  CompressorTrainOptions o;
  o.cache.policy = "lococo";
  o.cache.budget = budget;
  o.cache.chunk = budget;
  o.cache.buffer = budget / 4;
  o.compressor.kernel = kernel;
  o.out = out;
  o.segments = segments;
  o.steps = steps;
  o.optim.lr = 1e-4;
  o.memory_lr_scale = 100;
  o.optim.schedule.kind = "constant";
  o.quiet = true;
  return o;
}

}  // namespace lococo::testing
