// Long-range recall (docs/DESIGN.md section 6): how much of the far context a
// cache keeps, measured smoothly. A document holds a passage of P tokens, then
// G tokens of other text (the gap), then the passage again; the mean NLL of
// the second occurrence drops when the cache still holds (or has fused) the
// first. The passage opens after `lead` tokens of text, so it sits
// mid-document. The same document with another passage first (a decoy) gives
// the floor: the NLL without any earlier occurrence. For a run at gap G:
//   gain = floor NLL - repeat NLL         (both under that run's cache)
//   recall kept = gain / the full cache's gain at G
// (the full cache runs up to the trained context; past it, its gain at the
// longest gap it ran is the reference). Every policy reads the same documents.
//
// report.json:
//   {"kind": "recall", "model": str, "passage": int, "lead": int, "passage_kind": str, "trials": int, "seed": int,
//    "budget": int, "chunk": int, "positions": str, "gaps": [int],
//    "runs": [{"policy": str, "budget": int, "cache": str,
//              "cells": [{"gap": int, "trials": int (0: not run), "repeat_nll": num, "floor_nll": num,
//                         "gain": num, "recall_kept": num|null}]}]}
#pragma once

#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lococo/eval/eval.h"
#include "lococo/kv/cache.h"
#include "lococo/kv/registry.h"
#include "lococo/model/model_dir.h"

namespace lococo {

struct RecallEvalOptions {
  std::vector<std::string> policies = {reference_policy()};  // policies to compare
  int64_t budget = 128;                        // M of the bounded policies
  std::vector<int64_t> gaps = {1024, 4096};    // G: tokens between the two occurrences
  int64_t passage = 64;                        // P: tokens of the passage
  int64_t lead = 512;                          // tokens of text before the first occurrence: the passage sits
                                               // mid-document, not where caches that favour old tokens keep it
  std::string kind = "shuffled";               // the passage: "shuffled" (corpus tokens in random order) or "text"
  int64_t trials = 4;                          // documents per gap (each with its decoy)
  uint64_t seed = 0;                           // passages, decoys and gap offsets
  bool full_beyond_context = false;            // run unbounded policies past max_position_embeddings
  CacheOptions cache;                          // chunk, positions and the policies' knobs
  bool progress = true;                        // progress bar on stderr
};

struct RecallCell {
  int64_t gap = 0;
  int64_t trials = 0;      // 0: not run (an unbounded policy past the trained context)
  double repeat_nll = 0;   // mean NLL of the second occurrence
  double floor_nll = 0;    // mean NLL of the same passage after a decoy
  double gain() const { return floor_nll - repeat_nll; }
};

struct RecallRun {
  CacheRun run;
  std::string cache;
  std::vector<RecallCell> cells;  // one per gap, in options.gaps order
};

struct RecallReport {
  std::string model;
  RecallEvalOptions options;
  std::vector<RecallRun> runs;
  // The reference gain at gap index g: the unbounded run's at g, or at the
  // longest gap it ran; negative when there is none.
  double reference_gain(size_t g) const;
  // gain / reference gain; NaN when either is missing.
  double recall_kept(const RecallRun& run, size_t g) const;
  nlohmann::json to_json() const;
};

// The two documents of one trial: [BOS, lead, passage, gap, passage] and
// [BOS, lead, decoy, gap, passage] (the same lead and gap text); `scored` is where the second passage's tokens
// after its first are (the first has no cue in either document).
struct RecallDocuments {
  std::vector<int64_t> repeat, decoy;
  int64_t scored_begin = 0, scored_end = 0;  // token positions [begin, end)
};
// Built from `corpus` (token ids of text) with `rng`; std::invalid_argument
// when the corpus is shorter than a passage plus the gap.
RecallDocuments make_recall_documents(const std::vector<int64_t>& corpus, int64_t bos, int64_t lead, int64_t passage,
                                      int64_t gap,
                                      const std::string& kind, std::mt19937_64& rng);

RecallReport eval_recall(const LoadedModel& model, const std::vector<int64_t>& corpus, const RecallEvalOptions& options);

std::string to_markdown(const RecallReport& report);
// report.json, report.md and recall.png (recall kept vs gap per policy).
std::vector<std::filesystem::path> write_report(const RecallReport& report, const std::filesystem::path& dir);

}  // namespace lococo
