// Long-range recall: the documents are what the report says they are, the
// ratio is taken against the right reference, and on the bundled model the
// full cache recalls a passage that a window smaller than the gap cannot.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <gtest/gtest.h>

#include "lococo/core/io_util.h"
#include "lococo/eval/recall.h"
#include "test_util.h"

namespace lococo {
namespace {

std::vector<int64_t> counting_corpus(int64_t n) {
  std::vector<int64_t> c(static_cast<size_t>(n));
  std::iota(c.begin(), c.end(), 10);
  return c;
}

TEST(RecallDocuments, LeadPassageGapPassageAndADecoy) {
  const auto corpus = counting_corpus(500);
  for (const std::string kind : {"shuffled", "text"}) {
    for (const int64_t lead : {0, 30}) {
      std::mt19937_64 rng(3);
      const auto d = make_recall_documents(corpus, /*bos=*/1, lead, /*passage=*/16, /*gap=*/100, kind, rng);
      ASSERT_EQ(d.repeat.size(), static_cast<size_t>(1 + lead + 16 + 100 + 16));
      ASSERT_EQ(d.decoy.size(), d.repeat.size());
      EXPECT_EQ(d.repeat[0], 1);
      const auto at = d.repeat.begin() + 1 + lead;  // the first occurrence
      const std::vector<int64_t> first(at, at + 16);
      const std::vector<int64_t> last(d.repeat.end() - 16, d.repeat.end());
      EXPECT_EQ(first, last);                                                   // the passage, twice
      EXPECT_TRUE(std::equal(d.decoy.end() - 16, d.decoy.end(), last.begin()));  // the decoy document ends the same
      EXPECT_NE(std::vector<int64_t>(d.decoy.begin() + 1 + lead, d.decoy.begin() + 17 + lead), first);
      EXPECT_TRUE(std::equal(d.repeat.begin(), at, d.decoy.begin()));                  // one lead
      EXPECT_TRUE(std::equal(at + 16, d.repeat.end() - 16, d.decoy.begin() + 17 + lead));  // one gap
      EXPECT_EQ(d.scored_end, static_cast<int64_t>(d.repeat.size()));
      EXPECT_EQ(d.scored_begin, d.scored_end - 15);
      // A corpus window, in order for "text", a permutation of one for "shuffled".
      auto sorted = first;
      std::sort(sorted.begin(), sorted.end());
      for (size_t i = 1; i < sorted.size(); ++i) EXPECT_EQ(sorted[i], sorted[i - 1] + 1);
      if (kind == "text") EXPECT_EQ(first, sorted);
    }
  }
  std::mt19937_64 rng(1);
  EXPECT_THROW(make_recall_documents(corpus, 1, 0, 16, 100, "poetry", rng), std::invalid_argument);
  EXPECT_THROW(make_recall_documents(counting_corpus(20), 1, 0, 16, 100, "text", rng), std::invalid_argument);
  EXPECT_THROW(make_recall_documents(corpus, 1, -1, 16, 100, "text", rng), std::invalid_argument);
}

TEST(RecallReport, KeptIsTheGainOverTheFullCachesGain) {
  RecallReport r;
  r.options.gaps = {100, 200, 400};
  RecallRun full{{"full", 0}, "full", {{100, 2, 1.0, 3.0}, {200, 2, 1.5, 3.0}, {400, 0, 0, 0}}};
  RecallRun h2o{{"h2o", 64}, "h2o", {{100, 2, 2.0, 3.0}, {200, 2, 2.5, 3.0}, {400, 2, 2.9, 3.1}}};
  r.runs = {h2o, full};
  EXPECT_DOUBLE_EQ(r.recall_kept(r.runs[0], 0), 0.5);        // 1.0 of the full cache's 2.0
  EXPECT_DOUBLE_EQ(r.recall_kept(r.runs[0], 1), 0.5 / 1.5);
  EXPECT_NEAR(r.recall_kept(r.runs[0], 2), 0.2 / 1.5, 1e-12);  // full did not run: its longest gap is the reference
  EXPECT_DOUBLE_EQ(r.recall_kept(r.runs[1], 1), 1.0);
  EXPECT_TRUE(std::isnan(r.recall_kept(r.runs[1], 2)));
  const auto j = r.to_json();
  EXPECT_EQ(j["runs"][1]["cells"][2]["recall_kept"], nullptr);
  EXPECT_EQ(j["kind"], "recall");
}

// The bundled model copies: with the passage in its cache the repeat is far
// easier than after a decoy; a 64-slot StreamingLLM window over a 512-token gap
// has lost the passage.
TEST(Recall, BundledModelRecallsWhatTheCacheKeeps) {
  const auto model = load_model_dir(std::filesystem::path(LOCOCO_SOURCE_DIR) / "models" / "lococo-tiny");
  const std::string text = read_text_file(std::filesystem::path(LOCOCO_SOURCE_DIR) / "tests" / "data" / "moby-dick-test-slice.txt");
  const auto corpus = model.tokenizer->encode(text);
  RecallEvalOptions o;
  o.policies = {"full", "streaming"};
  o.budget = 64;
  o.gaps = {512};
  o.passage = 32;
  o.lead = 128;
  o.trials = 3;
  o.cache.chunk = 64;
  o.cache.positions = PositionMode::Cache;
  o.progress = false;
  const RecallReport r = eval_recall(model, corpus, o);
  ASSERT_EQ(r.runs.size(), 2u);
  const RecallCell& full = r.runs[0].cells[0];
  EXPECT_GT(full.gain(), 1.0) << "repeat " << full.repeat_nll << " vs floor " << full.floor_nll;
  EXPECT_LT(std::abs(r.recall_kept(r.runs[1], 0)), 0.15);
}

}  // namespace
}  // namespace lococo
