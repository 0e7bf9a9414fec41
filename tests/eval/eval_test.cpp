// Evaluation: eval ppl against an independent NLL computation, the passkey
// generator and scorer, report schemas, and the errors of bad ranges.
#include <fstream>
#include <numeric>

#include <gtest/gtest.h>

#include "lococo/eval/bench.h"
#include "lococo/eval/eval.h"
#include "lococo/eval/passkey.h"
#include "lococo/eval/perplexity.h"
#include "lococo/core/text_pieces.h"
#include "test_util.h"

namespace lococo {
namespace {

LoadedModel tiny_loaded(const std::filesystem::path& dir, int64_t context = 512) {
  auto c = testing::tiny_config();
  c.max_position_embeddings = context;
  LoadedModel m;
  m.model = std::make_shared<LlamaModel>(testing::random_model(c, 3));
  m.dir = dir;
  return m;
}

// exp(mean NLL) straight from one full forward's logits.
double direct_perplexity(const LlamaModel& model, const std::vector<int64_t>& tokens) {
  torch::NoGradGuard g;
  auto t = torch::tensor(tokens, torch::kInt64);
  const int64_t n = t.size(0);
  auto logp = torch::log_softmax(model.forward(t.narrow(0, 0, n - 1), nullptr)[0].to(torch::kFloat64), -1);  // [n-1, V]
  return std::exp(-logp.gather(1, t.narrow(0, 1, n - 1).unsqueeze(1)).mean().item<double>());
}

std::vector<int64_t> ids(const torch::Tensor& t) { return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()}; }

TEST(EvalPpl, FullCacheEqualsExpMeanNllOfTheLogits) {
  testing::TempDir dir;
  const auto m = tiny_loaded(dir.path());
  std::vector<Document> docs = {{"a", ids(testing::random_tokens(300, 64, 1))}, {"b", ids(testing::random_tokens(150, 64, 2))}};
  PplEvalOptions o;
  o.policies = {"full"};
  o.cache.chunk = 32;
  o.bucket = 100;
  o.progress = false;
  const PplReport r = eval_perplexity(m, docs, o);
  ASSERT_EQ(r.runs.size(), 1u);
  // Pool the two documents' NLLs by hand: (299 + 149) scored tokens.
  const double nll_a = std::log(direct_perplexity(*m.model, docs[0].tokens)) * 299;
  const double nll_b = std::log(direct_perplexity(*m.model, docs[1].tokens)) * 149;
  EXPECT_EQ(r.runs[0].tokens, 448);
  EXPECT_NEAR(r.runs[0].perplexity(), std::exp((nll_a + nll_b) / 448), 1e-4 * r.runs[0].perplexity());
  // Buckets of 100 positions: 1..99 | 100..199 | 200..299, both documents counted.
  ASSERT_EQ(r.runs[0].buckets.size(), 3u);
  EXPECT_EQ(r.runs[0].buckets[0].tokens, 99 + 99);
  EXPECT_EQ(r.runs[0].buckets[1].tokens, 100 + 50);
  EXPECT_EQ(r.runs[0].buckets[2].tokens, 100);
}

// Documents read from files are scored piece by piece (their ids are not
// kept) and give the same report as the same ids held in memory.
TEST(EvalPpl, FileDocumentsStreamAndEqualTheirIdsInMemory) {
  testing::TempDir dir;
  const LoadedModel m = testing::tokenized_tiny_model(dir.path() / "model");
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Line " + std::to_string(i) + ": the whale swam past the ship.\n";
  std::ofstream(dir / "doc.txt") << text;
  const auto files = load_documents({(dir / "doc.txt").string()}, *m.tokenizer, /*max_tokens=*/300);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_TRUE(files[0].tokens.empty());
  std::vector<int64_t> whole = m.tokenizer->encode(text, /*add_bos=*/true);
  ASSERT_GT(whole.size(), 300u);
  whole.resize(300);
  EXPECT_EQ(files[0].size(), 300);
  std::vector<int64_t> pieces;
  for_each_piece(files[0], m.tokenizer.get(), [&](const std::vector<int64_t>& ids) {
    pieces.insert(pieces.end(), ids.begin(), ids.end());
  });
  EXPECT_EQ(pieces, whole);
  // A file of several pieces, through the bundled tokenizer (whose texts open with a
  // word-start marker, which a piece after a line end must not get): its whole ids.
  const auto bundled = load_tokenizer(std::filesystem::path(LOCOCO_SOURCE_DIR) / "models" / "lococo-tiny");
  std::string book;
  for (int i = 0; book.size() < 60000; ++i) book += (i % 5 ? "" : "\n") + std::string("Call me Ishmael, ") + std::to_string(i) + ".\n";
  std::ofstream(dir / "book.txt") << book;
  const auto books = load_documents({(dir / "book.txt").string()}, *bundled);
  std::vector<int64_t> book_pieces;
  for_each_piece(books[0], bundled.get(), [&](const std::vector<int64_t>& ids) {
    book_pieces.insert(book_pieces.end(), ids.begin(), ids.end());
  });
  EXPECT_EQ(book_pieces, bundled->encode(book, /*add_bos=*/true));
  PplEvalOptions o;
  o.policies = {"full", "h2o"};
  o.budgets = {64};
  o.cache.chunk = 32;
  o.bucket = 100;
  o.progress = false;
  const PplReport from_file = eval_perplexity(m, files, o);
  const PplReport in_memory = eval_perplexity(m, {{"doc", whole}}, o);
  ASSERT_EQ(from_file.runs.size(), in_memory.runs.size());
  for (size_t i = 0; i < from_file.runs.size(); ++i) {
    EXPECT_EQ(from_file.runs[i].tokens, 299);
    EXPECT_DOUBLE_EQ(from_file.runs[i].mean_nll, in_memory.runs[i].mean_nll);
    ASSERT_EQ(from_file.runs[i].buckets.size(), 3u);
    EXPECT_EQ(from_file.runs[i].buckets[2].tokens, 100);
  }
}

TEST(EvalPpl, BoundedPoliciesRunAtEveryBudgetAndReportValidJson) {
  testing::TempDir dir;
  const auto m = tiny_loaded(dir.path());
  std::vector<Document> docs = {{"a", ids(testing::random_tokens(260, 64, 1))}};
  PplEvalOptions o;
  o.policies = {"full", "streaming", "h2o", "lococo-hh"};
  o.budgets = {32, 64};
  o.cache.chunk = 16;
  o.progress = false;
  const PplReport r = eval_perplexity(m, docs, o);
  ASSERT_EQ(r.runs.size(), 7u);  // full once, 3 policies x 2 budgets
  const auto j = r.to_json();
  EXPECT_EQ(j.at("kind"), "perplexity");
  for (const char* k : {"documents", "tokens", "chunk", "bucket"}) EXPECT_TRUE(j.at(k).is_number_integer()) << k;
  EXPECT_TRUE(j.at("positions").is_string());
  for (const auto& run : j.at("runs")) {
    EXPECT_TRUE(run.at("policy").is_string());
    EXPECT_TRUE(run.at("cache").is_string());
    for (const char* k : {"budget", "tokens", "peak_rss_bytes", "cache_bytes"}) EXPECT_TRUE(run.at(k).is_number_integer()) << k;
    for (const char* k : {"mean_nll", "perplexity", "tokens_per_second"}) EXPECT_TRUE(run.at(k).is_number()) << k;
    EXPECT_GT(run.at("perplexity").get<double>(), 1.0);
    for (const auto& b : run.at("buckets")) {
      EXPECT_TRUE(b.at("start").is_number_integer());
      EXPECT_TRUE(b.at("tokens").is_number_integer());
      EXPECT_TRUE(b.at("perplexity").is_number());
    }
  }
  // A bounded cache is smaller than the full one on this 260-token document.
  EXPECT_LT(r.runs[1].cache_bytes, r.runs[0].cache_bytes);
  // The files: JSON that parses back to the same report, and Markdown naming every policy.
  const auto written = write_report(r, dir / "report");
  std::ifstream in(dir / "report" / "report.json");
  EXPECT_EQ(nlohmann::json::parse(in), j);
  std::ifstream md(dir / "report" / "report.md");
  const std::string text((std::istreambuf_iterator<char>(md)), {});
  for (const char* p : {"full", "streaming", "h2o", "lococo-hh"}) EXPECT_NE(text.find(p), std::string::npos) << p;
}

TEST(EvalPpl, RejectsBadRanges) {
  testing::TempDir dir;
  const auto m = tiny_loaded(dir.path());
  std::vector<Document> docs = {{"a", ids(testing::random_tokens(100, 64, 1))}};
  PplEvalOptions o;
  o.progress = false;
  o.policies = {"full", "nonsense"};
  EXPECT_THROW(eval_perplexity(m, docs, o), std::invalid_argument);
  o.policies = {"h2o"};
  o.budgets = {100};  // holds the whole document: nothing to compare
  EXPECT_THROW(eval_perplexity(m, docs, o), std::invalid_argument);
  o.budgets = {0};
  EXPECT_THROW(eval_perplexity(m, docs, o), std::invalid_argument);
}

TEST(EvalRuns, LococoFindsTheModelsOwnCompressor) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir / "compressors");
  std::ofstream(dir / "compressors" / "m128.safetensors") << "x";
  CacheOptions base;
  EXPECT_EQ(run_cache_options(base, {"lococo", 128}, dir.path()).lococo.compressor,
            (dir / "compressors" / "m128.safetensors").string());
  testing::expect_error([&] { run_cache_options(base, {"lococo", 256}, dir.path()); }, {"m256.safetensors"});
  EXPECT_EQ(run_cache_options(base, {"h2o", 256}, dir.path()).lococo.compressor, "");  // needs none
  base.lococo.compressor = "mine.safetensors";  // an explicit file wins
  EXPECT_EQ(run_cache_options(base, {"lococo", 128}, dir.path()).lococo.compressor, "mine.safetensors");
}

// ---- Passkey ----------------------------------------------------------------

class PasskeyTest : public ::testing::Test {
 protected:
  void SetUp() override { m_ = testing::tokenized_tiny_model(dir_.path()); }
  testing::TempDir dir_;
  LoadedModel m_;
};

TEST_F(PasskeyTest, KeySitsAtTheRequestedDepth) {
  const auto& tok = *m_.tokenizer;
  const auto needle_start = tok.encode(" The pass key is");
  std::mt19937_64 rng0(5);
  const int64_t head = make_passkey_example(tok, 1000, 0.0, rng0).key_offset;  // instruction tokens (+ BOS)
  for (double depth : {0.0, 0.25, 0.5, 1.0}) {
    std::mt19937_64 rng(5);
    const auto ex = make_passkey_example(tok, 1000, depth, rng);
    EXPECT_LE(static_cast<int64_t>(ex.prompt.size()), 1000);
    // The needle starts at key_offset ...
    ASSERT_LE(ex.key_offset + needle_start.size(), ex.prompt.size());
    EXPECT_TRUE(std::equal(needle_start.begin(), needle_start.end(), ex.prompt.begin() + ex.key_offset));
    // ... and that offset is `depth` of the way through the filler (within one filler sentence group).
    const double filler_span = static_cast<double>(ex.prompt.size()) - passkey_min_length(tok);
    const double at = static_cast<double>(ex.key_offset - head) / filler_span;
    EXPECT_NEAR(at, depth, 0.05) << "depth " << depth;
    // The key's digits are in the prompt's text.
    EXPECT_NE(tok.decode(ex.prompt).find(ex.key), std::string::npos);
  }
}

TEST_F(PasskeyTest, CorpusFillerIsAWindowOfTheCorpusAroundTheKey) {
  const auto& tok = *m_.tokenizer;
  std::vector<int64_t> corpus(500);
  std::iota(corpus.begin(), corpus.end(), 100);  // 100, 101, ...: every window is a run of consecutive ids
  const auto needle_start = tok.encode(" The pass key is");
  for (double depth : {0.0, 0.5, 1.0}) {
    std::mt19937_64 rng(7);
    const auto ex = make_passkey_example(tok, 300, depth, rng, &corpus);
    EXPECT_EQ(static_cast<int64_t>(ex.prompt.size()), 300);  // the corpus fills every free token
    ASSERT_TRUE(std::equal(needle_start.begin(), needle_start.end(), ex.prompt.begin() + ex.key_offset));
    std::mt19937_64 head_rng(7);
    const int64_t head = make_passkey_example(tok, 300, 0.0, head_rng, &corpus).key_offset;
    const double filler = 300.0 - static_cast<double>(passkey_min_length(tok));
    EXPECT_NEAR(static_cast<double>(ex.key_offset - head) / filler, depth, 0.02);
    // Before and after the needle, the filler continues one corpus window (mod the corpus size).
    const auto needle = tok.encode(" The pass key is " + ex.key + ". Remember it. " + ex.key + " is the pass key.");
    const auto question = tok.encode(" What is the pass key? The pass key is");
    std::vector<int64_t> window(ex.prompt.begin() + head, ex.prompt.begin() + ex.key_offset);
    window.insert(window.end(), ex.prompt.begin() + ex.key_offset + static_cast<int64_t>(needle.size()),
                  ex.prompt.end() - static_cast<int64_t>(question.size()));
    ASSERT_EQ(static_cast<int64_t>(window.size()), 300 - head - static_cast<int64_t>(needle.size() + question.size()));
    for (size_t i = 1; i < window.size(); ++i) EXPECT_EQ((window[i] - 100) % 500, (window[i - 1] - 100 + 1) % 500);
  }
  const std::vector<int64_t> empty;
  std::mt19937_64 rng(1);
  EXPECT_THROW(make_passkey_example(tok, 300, 0.5, rng, &empty), std::invalid_argument);
}

TEST_F(PasskeyTest, ScorerIsExact) {
  EXPECT_TRUE(passkey_correct(" 12345", "12345"));
  EXPECT_TRUE(passkey_correct("12345. It was", "12345"));
  EXPECT_FALSE(passkey_correct(" 12346", "12345"));
  EXPECT_FALSE(passkey_correct(" 123456", "12345"));  // extra digit
  EXPECT_FALSE(passkey_correct(" 1234", "12345"));
  EXPECT_FALSE(passkey_correct(" the key is 12345", "12345"));  // not the continuation
}

TEST_F(PasskeyTest, EvalReportsEveryCellAndRejectsBadRanges) {
  PasskeyEvalOptions o;
  o.policies = {"full", "streaming"};
  o.budget = 64;
  o.lengths = {200, 300};
  o.depths = {0, 1};
  o.trials = 2;
  o.cache.chunk = 64;
  o.progress = false;
  const PasskeyReport r = eval_passkey(m_, o);
  ASSERT_EQ(r.runs.size(), 2u);
  for (const auto& run : r.runs) {
    ASSERT_EQ(run.cells.size(), 4u);
    for (const auto& c : run.cells) EXPECT_EQ(c.trials, 2);
  }
  const auto j = r.to_json();
  EXPECT_EQ(j.at("kind"), "passkey");
  for (const auto& run : j.at("runs"))
    for (const auto& c : run.at("cells")) {
      EXPECT_TRUE(c.at("length").is_number_integer());
      EXPECT_TRUE(c.at("depth").is_number());
      EXPECT_TRUE(c.at("accuracy").is_number());
    }
  // The full cache stops at the trained context (512 here).
  o.lengths = {300, 600};
  o.policies = {"full"};
  const PasskeyReport beyond = eval_passkey(m_, o);
  EXPECT_EQ(beyond.runs[0].cells[2].trials, 0);
  EXPECT_TRUE(beyond.to_json().at("runs")[0].at("cells")[2].at("accuracy").is_null());
  auto bad = o;
  bad.depths = {1.5};
  EXPECT_THROW(eval_passkey(m_, bad), std::invalid_argument);
  bad = o;
  bad.policies = {"streaming"};
  bad.budget = 1000;  // larger than every prompt
  EXPECT_THROW(eval_passkey(m_, bad), std::invalid_argument);
  bad = o;
  bad.lengths = {5};  // shorter than the prompt's fixed text
  EXPECT_THROW(eval_passkey(m_, bad), std::invalid_argument);
}

TEST_F(PasskeyTest, CliErrorsNameTheFlag) {
  std::string out;
  const std::string model = "-m " + dir_.path().string() + " --out " + (dir_ / "o").string();
  EXPECT_NE(testing::run_cli("eval passkey " + model + " --lengths 1k,abc", &out), 0);
  EXPECT_NE(out.find("--lengths"), std::string::npos) << out;
  EXPECT_NE(testing::run_cli("eval passkey " + model + " --depths 0,2", &out), 0);
  EXPECT_NE(out.find("--depths"), std::string::npos) << out;
  EXPECT_NE(testing::run_cli("eval ppl " + model + " --data " + dir_.path().string() + " --policies full,bogus", &out), 0);
  EXPECT_NE(out.find("--policies"), std::string::npos) << out;
}

TEST_F(PasskeyTest, TextPiecesTokeniseLikeTheWholeText) {
  // Lines of varied length and one very long line (cut at spaces).
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Line " + std::to_string(i) + " of the sample, with some words.\n";
  for (int i = 0; i < 400; ++i) text += "long line word" + std::to_string(i) + " ";
  text += "\nThe end.\n";
  const auto file = dir_ / "text.txt";
  std::ofstream(file) << text;
  TextPieces pieces(file.string(), 256);
  std::string piece, joined;
  std::vector<int64_t> ids;
  int n = 0;
  while (pieces.next(piece)) {
    EXPECT_LE(piece.size(), 16u * 256 + 256) << "bounded pieces";
    joined += piece;
    const auto more = m_.tokenizer->encode(piece, n++ == 0);
    ids.insert(ids.end(), more.begin(), more.end());
  }
  EXPECT_GT(n, 10);
  EXPECT_EQ(joined, text);
  EXPECT_EQ(pieces.bytes_read(), static_cast<int64_t>(text.size()));
  EXPECT_EQ(ids, m_.tokenizer->encode(text, true));
}

TEST(PerplexityStream, PieceByPieceEqualsAllAtOnce) {
  const auto model = testing::random_model(testing::tiny_config(), 4);
  const auto all = ids(testing::random_tokens(203, 64, 9));
  CacheOptions co;
  co.chunk = 16;
  auto c1 = make_cache(model.config(), co);
  PerplexityOptions po;
  po.chunk = 16;
  const auto whole = streaming_perplexity(model, *c1, all, po);
  auto c2 = make_cache(model.config(), co);
  po.keep_nll = false;
  PerplexityStream stream(model, *c2, po);
  for (size_t s = 0; s < all.size(); s += 37)
    stream.feed({all.begin() + s, all.begin() + std::min(all.size(), s + 37)});
  const auto pieces = stream.finish();
  EXPECT_EQ(pieces.scored, 202);
  EXPECT_EQ(whole.nll.size(), 202u);
  EXPECT_NEAR(pieces.mean_nll(), whole.mean_nll(), 1e-6);
  EXPECT_TRUE(pieces.nll.empty());
}

// ---- Bench ------------------------------------------------------------------

TEST(Bench, RandomFillKeepsBoundedCachesBoundedAndReportsEveryPoint) {
  testing::TempDir dir;
  const auto m = tiny_loaded(dir.path(), 4096);
  BenchOptions o;
  o.contexts = {64, 1024};
  o.policies = {"full", "h2o"};
  o.budget = 32;
  o.prompt = 16;
  o.gen = 4;
  o.random_fill = true;
  o.cache.chunk = 16;
  o.progress = false;
  const BenchReport r = run_bench(m, o);
  ASSERT_EQ(r.points.size(), 4u);
  EXPECT_EQ(r.points[1].slots, 1024 + 16);  // full: depth + prompt (counted before generation)
  EXPECT_LE(r.points[3].slots, 32 + 16 + 16);        // h2o: at most M + b + B
  for (const auto& p : r.points) {
    EXPECT_GT(p.gen_tokens_per_second, 0);
    EXPECT_GT(p.gen_bandwidth_fraction, 0);
    EXPECT_LE(p.bandwidth_gb_s, r.machine.bandwidth_gb_s);  // the run's best is the best of the points'
    EXPECT_LE(p.gen_bandwidth_fraction_of_best, p.gen_bandwidth_fraction);
    EXPECT_GT(p.prompt_gemm_fraction, 0);
    EXPECT_GT(p.gemm_gflop_s, 0);
    EXPECT_LE(p.gemm_gflop_s, r.machine.gemm_gflop_s);  // likewise for the GEMM rate beside each prompt
  }
  EXPECT_GT(r.machine.bandwidth_gb_s, 0);
  EXPECT_GT(r.machine.gemm_gflop_s, 0);
  EXPECT_EQ(r.to_json().at("points").size(), 4u);
}

}  // namespace
}  // namespace lococo
