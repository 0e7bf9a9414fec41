// Compressor training: the base stays frozen, training helps on a recall task,
// resume is exact.
#include <cmath>
#include <optional>
#include <random>

#include <gtest/gtest.h>

#include <fstream>

#include "kv/lococo_cache.h"
#include "lococo/kv/lococo.h"
#include "lococo/train/train_compressor.h"
#include "test_util.h"

namespace lococo {
namespace {

// A stream of "key value" pairs early on, then filler, then the same keys asked
// again: retrieval needs what compression kept of the early part.
std::vector<int32_t> recall_stream(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(10, 63);
  std::vector<int32_t> out;
  while (static_cast<int64_t>(out.size()) < n) {
    std::vector<std::pair<int, int>> pairs;
    for (int i = 0; i < 8; ++i) pairs.emplace_back(tok(rng), tok(rng));
    out.push_back(1);
    for (auto [k, v] : pairs) out.insert(out.end(), {2, k, v});
    for (int i = 0; i < 40; ++i) out.push_back(3 + i % 5);
    for (auto [k, v] : pairs) out.insert(out.end(), {4, k, v});
  }
  out.resize(n);
  return out;
}

CompressorTrainOptions small_options(const std::filesystem::path& out) {
  auto o = testing::small_compressor_options(out, /*budget=*/16, /*kernel=*/5, /*segments=*/6, /*steps=*/30);
  o.val_tokens = 512;
  return o;
}

TEST(TrainCompressor, BaseWeightsStayBitIdentical) {
  testing::TempDir dir;
  auto model = testing::random_model(testing::tiny_config(), 1);
  LlamaWeights before = model.weights();
  std::vector<torch::Tensor> copies;
  for (auto& [n, t] : before.named(model.config())) copies.push_back(t->clone());
  TokenData train(recall_stream(2000, 1));
  auto o = small_options(dir / "c.safetensors");
  o.steps = 5;
  train_compressor(model, train, nullptr, o);
  auto after = const_cast<LlamaWeights&>(model.weights()).named(model.config());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(torch::equal(*after[i].second, copies[i])) << after[i].first;
    EXPECT_FALSE(after[i].second->requires_grad()) << after[i].first;
  }
  EXPECT_TRUE(std::filesystem::exists(dir / "c.safetensors"));
}

TEST(TrainCompressor, RecallRowsRepeatAPassageAfterALead) {
  TokenData data(recall_stream(2000, 7));
  auto o = small_options("unused");
  o.recall_rate = 1.0;
  o.recall_passage = 12;
  o.recall_weight = 4;
  std::mt19937_64 rng(5);
  for (bool shuffled : {true, false}) {
    o.recall_shuffled = shuffled;
    for (double lead : {0.0, 0.5}) {
      o.recall_lead = lead;
      const auto row = training_sequence(data, 97, o, rng);
      ASSERT_EQ(row.tokens.size(0), 97);
      ASSERT_EQ(row.weights.size(0), 96);
      const auto repeat = row.tokens.narrow(0, 85, 12);
      bool found = false;  // the passage's first occurrence: at 0 without a lead, within the first half otherwise
      for (int64_t at = 0; at <= (lead > 0 ? 36 : 0) && !found; ++at)
        found = torch::equal(row.tokens.narrow(0, at, 12), repeat);
      EXPECT_TRUE(found) << "shuffled " << shuffled << " lead " << lead;
      // The repeat's predictions after its first token weigh 4, every other 1.
      EXPECT_EQ(row.weights.narrow(0, 85, 11).min().item<float>(), 4.0f);
      EXPECT_EQ(row.weights.narrow(0, 0, 85).max().item<float>(), 1.0f);
      EXPECT_TRUE(torch::equal(row.repeat, row.weights > 1));  // the repeat's predictions, marked
    }
  }
  // With a gap: the passage twice, [gap / 2, gap] apart, text after the repeat; the weights mark the repeat.
  o.recall_gap = 20;
  for (int trial = 0; trial < 5; ++trial) {
    const auto row = training_sequence(data, 97, o, rng);
    const auto heavy = torch::nonzero(row.weights > 1).flatten();  // predictions of the repeat's tokens 2..12
    ASSERT_EQ(heavy.size(0), 11);
    const int64_t repeat_at = heavy[0].item<int64_t>();
    const auto repeat = row.tokens.narrow(0, repeat_at, 12);
    int64_t first_at = -1;
    for (int64_t at = 0; at + 12 <= repeat_at && first_at < 0; ++at)
      if (torch::equal(row.tokens.narrow(0, at, 12), repeat)) first_at = at;
    ASSERT_GE(first_at, 0);
    const int64_t gap = repeat_at - first_at - 12;
    EXPECT_GE(gap, 10);
    EXPECT_LE(gap, 20);
  }
  o.recall_gap = 80;  // more than the sequence has
  EXPECT_THROW(training_sequence(data, 97, o, rng), std::invalid_argument);
  o.recall_gap = 0;
  o.recall_rate = 0;
  std::mt19937_64 a(9), b(9);
  const auto plain = training_sequence(data, 50, o, a);
  EXPECT_TRUE(torch::equal(plain.tokens, data.random_window(50, b)));  // plain windows otherwise
  EXPECT_EQ(plain.weights.sum().item<float>(), 49.0f);
  EXPECT_FALSE(plain.repeat.any().item<bool>());
  o.recall_rate = 1.0;
  o.recall_passage = 40;
  EXPECT_THROW(training_sequence(data, 60, o, rng), std::invalid_argument);
}

TEST(TrainCompressor, WeightedLossIsTheMeanUnderUnitWeights) {
  const auto logits = torch::randn({5, 11});
  const auto targets = torch::randint(0, 11, {5}, torch::kInt64);
  EXPECT_NEAR(weighted_next_token_loss(logits, targets, torch::ones({5})).item<double>(),
              next_token_loss(logits, targets).item<double>(), 1e-6);
  auto w = torch::zeros({5});
  w[2] = 3;  // only the third prediction, three times over a fifth
  const double one = torch::nn::functional::cross_entropy(logits.narrow(0, 2, 1), targets.narrow(0, 2, 1)).item<double>();
  EXPECT_NEAR(weighted_next_token_loss(logits, targets, w).item<double>(), 3 * one / 5, 1e-6);
}

TEST(TrainCompressor, DistillationLossIsTheKlFromTheFullCache) {
  auto logits = torch::randn({4, 16});
  const auto teacher = torch::log_softmax(logits, -1);
  EXPECT_NEAR(distillation_loss(teacher, logits).item<double>(), 0.0, 1e-6);
  const auto other = torch::randn({4, 16});
  const double kl = distillation_loss(teacher, other).item<double>();
  const auto p = teacher.exp();
  const double want = (p * (teacher - torch::log_softmax(other, -1))).sum(-1).mean().item<double>();
  EXPECT_NEAR(kl, want, 1e-6);
  EXPECT_GT(kl, 0);
}

// Every objective trains (the loss is defined once compression starts) with
// recall rows and BPTT in the mix, and leaves a compressor that loads back.
TEST(TrainCompressor, DistillMixRecallRowsAndBpttTrain) {
  testing::TempDir dir;
  auto model = testing::random_model(testing::tiny_config(), 1);
  TokenData train(recall_stream(3000, 4));
  for (const std::string objective : {"distill", "mix"}) {
    auto o = small_options(dir / (objective + ".safetensors"));
    o.steps = 4;
    o.objective = objective;
    o.recall_rate = 0.5;
    o.recall_passage = 8;
    o.bptt_chunks = 2;
    o.grad_accum = 2;
    const auto r = train_compressor(model, train, nullptr, o);
    EXPECT_EQ(r.steps_done, 4);
    EXPECT_TRUE(std::isfinite(r.last_loss));
    EXPECT_GE(r.last_loss, 0);
    CacheOptions cache = o.cache;
    EXPECT_NO_THROW(LococoCompressor::load(o.out, model.config(), cache));
  }
  auto bad = small_options(dir / "bad.safetensors");
  bad.objective = "guess";
  EXPECT_THROW(train_compressor(model, train, nullptr, bad), std::invalid_argument);
  bad.objective = "lm";
  bad.bptt_chunks = 3;  // each optimiser step would cut the window short
  EXPECT_THROW(train_compressor(model, train, nullptr, bad), std::invalid_argument);
}

TEST(TrainCompressor, TrainingLowersValidationPerplexityOfLococo) {
  testing::TempDir dir;
  auto model = testing::random_model(testing::tiny_config(), 2, 0.5);
  TokenData train(recall_stream(4000, 2)), val(recall_stream(600, 99));
  auto o = small_options(dir / "c.safetensors");
  // The untrained compressor, as training starts from it (same seed).
  CompressorOptions copts = CompressorOptions::from(model.config(), o.cache);
  copts.kernel = o.compressor.kernel;
  auto untrained = std::make_shared<LococoCompressor>(copts, o.seed);
  torch::Tensor val_tokens = val.tokens().narrow(0, 0, o.val_tokens);
  double before = 0;
  {
    torch::NoGradGuard g;
    LococoCache cache(model.config(), o.cache, untrained);
    before = streaming_ppl(model, cache, val_tokens, o.cache.chunk);
  }
  auto r = train_compressor(model, train, &val, o);
  ASSERT_FALSE(r.validations.empty());
  EXPECT_LT(r.validations.back().lococo, before);
  auto trained = LococoCompressor::load(o.out, model.config(), o.cache);
  torch::NoGradGuard g;
  LococoCache cache(model.config(), o.cache, trained);
  EXPECT_LT(streaming_ppl(model, cache, val_tokens, o.cache.chunk), before);
}

// Stopped after 4 steps and resumed, a run's losses are the uninterrupted
// run's, also when a step accumulates gradients over several chunks (a stop
// between them must not lose the part accumulated).
TEST(TrainCompressor, ResumeEqualsUninterruptedRun) {
  torch::set_num_threads(1);
  testing::TempDir dir;
  auto model = testing::random_model(testing::tiny_config(), 3);
  TokenData train(recall_stream(3000, 3));
  auto read_losses = [](const std::filesystem::path& p) {
    std::vector<double> l;
    std::ifstream in(p);
    for (std::string line; std::getline(in, line);) l.push_back(nlohmann::json::parse(line).at("loss"));
    return l;
  };
  for (const int64_t accum : {1, 2, 3, 4}) {
    const std::string tag = "accum" + std::to_string(accum);
    auto full = small_options(dir / (tag + "-full.safetensors"));
    full.steps = 12;
    full.grad_accum = accum;
    train_compressor(model, train, nullptr, full);
    auto split = small_options(dir / (tag + "-split.safetensors"));
    split.steps = 12;
    split.grad_accum = accum;
    split.stop_after = 4;
    EXPECT_TRUE(train_compressor(model, train, nullptr, split).interrupted);
    split.stop_after = 0;
    split.resume = true;
    auto changed = split;  // a resumed run keeps its configuration: a changed one is refused by flag
    changed.grad_accum = accum + 1;
    testing::expect_error([&] { train_compressor(model, train, nullptr, changed); }, {"--grad-accum", "split"});
    EXPECT_FALSE(train_compressor(model, train, nullptr, split).interrupted);
    auto a = read_losses(dir / (tag + "-full.safetensors.metrics.jsonl"));
    auto b = read_losses(dir / (tag + "-split.safetensors.metrics.jsonl"));
    ASSERT_EQ(a.size(), 12u) << tag;
    ASSERT_EQ(b.size(), a.size()) << tag;
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5) << tag << " step " << i + 1;
  }
}

}  // namespace
}  // namespace lococo

namespace lococo {
namespace {

// A double-precision model and compressor whose gradients can be checked
// against finite differences (lambda away from 0.5, conv outputs away from
// ReLU's kink): budget 8, chunk 8, buffer 2, so a compression fires at chunk 2
// and at every chunk after it.
struct DoubleSetup {
  ModelConfig c = testing::tiny_config();
  ModelOptions mo;
  std::unique_ptr<LlamaModel> model;
  CacheOptions o;
  std::shared_ptr<LococoCompressor> compressor;
  DoubleSetup() {
    mo.dtype = torch::kFloat64;
    LlamaWeights w = init_weights(c, 11, mo);
    {
      torch::NoGradGuard g;
      for (auto& [n, t] : w.named(c))
        if (n.find("norm") == std::string::npos) t->normal_(0.0, 0.4);
    }
    model = std::make_unique<LlamaModel>(c, w, mo);
    o.policy = "lococo";
    o.budget = 8;
    o.chunk = 8;
    o.buffer = 2;
    o.dtype = torch::kFloat64;
    CompressorOptions copts = CompressorOptions::from(c, o);
    copts.kernel = 3;
    compressor = std::make_shared<LococoCompressor>(copts, 5);
    compressor->to(torch::kFloat64);
    torch::NoGradGuard g;
    for (auto& p : compressor->named_parameters())
      if (p.key().find("lambda") != std::string::npos) p.value().fill_(0.3);
  }
};

// Loss of the last of `chunks` chunks, as a function of the compressor. The
// earlier chunks run without gradients when `grad_from` is past them.
double last_chunk_loss(const DoubleSetup& d, const torch::Tensor& tokens, int64_t chunks, int64_t grad_from,
                       torch::Tensor* loss_out = nullptr) {
  LococoCache cache(d.c, d.o, d.compressor);
  const int64_t B = d.o.chunk;
  torch::Tensor logits;
  for (int64_t s = 0; s < chunks; ++s) {
    std::optional<torch::NoGradGuard> g;
    if (s < grad_from) g.emplace();
    logits = d.model->forward(tokens.narrow(0, s * B, B), &cache)[0];
  }
  auto loss = next_token_loss(logits, tokens.narrow(0, (chunks - 1) * B + 1, B));
  if (loss_out) *loss_out = loss;
  return loss.item<double>();
}

// Checks the gradients of layer 0's parameters (6 conv weights, 4 biases,
// lambda) against central differences of `loss_of`; returns how many differ.
template <class LossOf>
int gradient_mismatches(DoubleSetup& d, LossOf&& loss_of, bool expect_match) {
  int mismatches = 0, checked = 0;
  for (auto& p : d.compressor->named_parameters()) {
    if (p.key().rfind("layers.0.", 0) != 0) continue;  // layer 0 suffices; the others share the code
    auto flat = p.value().view({-1});
    auto grad = p.value().grad().view({-1});
    for (int64_t i = 0; i < std::min<int64_t>(flat.size(0), 6); ++i) {
      const double h = 1e-6;
      const double orig = flat[i].item<double>();
      torch::NoGradGuard g;
      flat[i].fill_(orig + h);
      const double up = loss_of();
      flat[i].fill_(orig - h);
      const double down = loss_of();
      flat[i].fill_(orig);
      const double numeric = (up - down) / (2 * h);
      const bool close = std::abs(grad[i].item<double>() - numeric) <= 1e-6 + 1e-4 * std::abs(numeric);
      if (expect_match) EXPECT_TRUE(close) << p.key() << "[" << i << "]: " << grad[i].item<double>() << " vs " << numeric;
      mismatches += !close;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6 + 4 + 1);
  return mismatches;
}

TEST(TrainCompressor, GradientsMatchFiniteDifferencesInDouble) {
  DoubleSetup d;
  auto tokens = testing::random_tokens(3 * 8 + 1, d.c.vocab_size, 4);
  torch::Tensor loss;
  last_chunk_loss(d, tokens, 3, /*grad_from=*/2, &loss);  // one compression, before chunk 2
  loss.backward();
  EXPECT_EQ(gradient_mismatches(d, [&] { return last_chunk_loss(d, tokens, 3, 3); }, true), 0);
}

// With --bptt-chunks covering the sequence, the last chunk's loss reaches all
// three compressions (before chunks 2, 3 and 4): the gradient is exact. With
// the reference's truncation (1) it reaches only the last one, and differs.
TEST(TrainCompressor, BpttGradientsReachEarlierCompressions) {
  auto tokens = testing::random_tokens(5 * 8 + 1, testing::tiny_config().vocab_size, 4);
  for (int64_t bptt : {8, 1}) {
    SCOPED_TRACE("bptt " + std::to_string(bptt));
    DoubleSetup d;
    d.o.bptt_chunks = bptt;
    torch::Tensor loss;
    last_chunk_loss(d, tokens, 5, /*grad_from=*/0, &loss);
    loss.backward();
    const int mismatches = gradient_mismatches(d, [&] { return last_chunk_loss(d, tokens, 5, 5); }, bptt == 8);
    if (bptt == 1) EXPECT_GT(mismatches, 0) << "truncated gradients should miss the earlier compressions";
  }
}

}  // namespace
}  // namespace lococo
