// Evaluation (docs/DESIGN.md section 6): streaming perplexity and passkey retrieval
// of one model under several KV-cache policies and budgets, with the same
// chunking for all, and their reports.
//
// report.json of `lococo eval ppl` (keys and types; tests check them):
//   {"kind": "perplexity", "model": str, "documents": int, "tokens": int,
//    "chunk": int, "positions": str, "bucket": int,
//    "runs": [{"policy": str, "budget": int (0 for full), "cache": str,
//              "tokens": int (scored), "mean_nll": num, "perplexity": num,
//              "buckets": [{"start": int, "tokens": int, "perplexity": num}],
//              "tokens_per_second": num, "peak_rss_bytes": int, "cache_bytes": int}]}
// report.json of `lococo eval passkey`:
//   {"kind": "passkey", "model": str, "trials": int, "seed": int, "budget": int,
//    "chunk": int, "positions": str, "lengths": [int], "depths": [num],
//    "runs": [{"policy": str, "budget": int, "cache": str, "accuracy": num | null,
//              "cells": [{"length": int, "depth": num, "trials": int, "correct": int,
//                         "accuracy": num | null}]}]}
// A cell with "trials": 0 was skipped (the full cache beyond the trained context).
// The full cache is left out of a perplexity report whose longest document is
// longer than the trained context (docs/DESIGN.md section 6), unless asked for.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lococo/kv/cache.h"
#include "lococo/kv/registry.h"
#include "lococo/model/model_dir.h"

namespace lococo {

// One cache configuration of an evaluation: a policy at a budget (0 for full).
struct CacheRun {
  std::string policy;
  int64_t budget = 0;
};
// "h2o M=128", or the policy alone for an unbounded one: reports' row names.
std::string label(const CacheRun& run);

// Every bounded policy at every budget; an unbounded one once (budget 0). Throws std::invalid_argument for
// an unknown policy, an empty list or a budget that is not positive.
std::vector<CacheRun> cache_runs(const std::vector<std::string>& policies, const std::vector<int64_t>& budgets);

// `base` with the run's policy and budget, and the model's own compressor for
// that budget where the policy needs one (resolve_compressor).
CacheOptions run_cache_options(const CacheOptions& base, const CacheRun& run, const std::filesystem::path& model_dir);

// A text document as token ids (BOS first). Held in memory (`tokens`), or a
// file whose ids are not kept: they are read again piece by piece each time
// the document is used (for_each_piece), so memory does not grow with it.
struct Document {
  std::string name;
  std::vector<int64_t> tokens;  // the ids, when held in memory
  std::filesystem::path file;   // else: the file, read piece by piece
  int64_t length = 0;           // the file's tokens (after the cut to max_tokens)
  int64_t size() const { return file.empty() ? static_cast<int64_t>(tokens.size()) : length; }
};
// The .txt files under `paths`, one document each, cut to at most `max_tokens`
// (0 = no cut); documents shorter than `min_tokens` are skipped. Throws naming
// a missing path, or when none is left.
std::vector<Document> load_documents(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                                     int64_t max_tokens = 0, int64_t min_tokens = 2);
// Calls `fn` with the document's ids (BOS first) piece by piece, size() in all
// (`tokenizer` reads a file; a document in memory needs none).
void for_each_piece(const Document& doc, const Tokenizer* tokenizer,
                    const std::function<void(const std::vector<int64_t>& ids)>& fn);
// All of a document set's ids, BOS left out (corpora of passkey filler and recall).
std::vector<int64_t> joined_tokens(const std::vector<Document>& docs, const Tokenizer& tokenizer);

// ---- Streaming perplexity -------------------------------------------------

struct PplEvalOptions {
  std::vector<std::string> policies = {reference_policy()};  // policies to compare
  std::vector<int64_t> budgets = {128};          // M values for the bounded policies
  CacheOptions cache;                            // chunk, positions and the policies' knobs
  int64_t bucket = 256;                          // width of the position buckets (tokens)
  bool full_beyond_context = false;              // run unbounded policies on documents past max_position_embeddings
  bool progress = true;                          // progress bar on stderr
};

struct PplBucket {
  int64_t start = 0, tokens = 0;  // positions [start, start + bucket) of every document
  double mean_nll = 0;
};

struct PplRun {
  CacheRun run;
  std::string cache;  // the cache's own description, e.g. "h2o(M=128,b=16)"
  int64_t tokens = 0; // scored tokens over all documents
  double mean_nll = 0;
  std::vector<PplBucket> buckets;
  double tokens_per_second = 0;
  int64_t peak_rss_bytes = 0, cache_bytes = 0;
  double perplexity() const;
};

struct PplReport {
  std::string model;
  int64_t documents = 0, tokens = 0;
  PplEvalOptions options;
  std::vector<PplRun> runs;
  nlohmann::json to_json() const;
};

PplReport eval_perplexity(const LoadedModel& model, const std::vector<Document>& docs, const PplEvalOptions& options);

// ---- Passkey retrieval ----------------------------------------------------

struct PasskeyEvalOptions {
  std::vector<std::string> policies = {reference_policy()};
  int64_t budget = 128;                       // M of the bounded policies
  std::vector<int64_t> lengths = {1024, 2048};  // prompt lengths in tokens
  std::vector<double> depths = {0, 0.25, 0.5, 0.75, 1};  // key position in the filler
  int64_t trials = 5;                         // examples per (length, depth)
  uint64_t seed = 0;                          // the keys; the same examples for every policy
  bool full_beyond_context = false;           // run unbounded policies past max_position_embeddings
  std::vector<std::string> filler;            // text files or directories the filler comes from
                                              // (empty: the classic repeated sentences)
  CacheOptions cache;                         // chunk, positions and the policies' knobs
  bool progress = true;
};

struct PasskeyCell {
  int64_t length = 0;
  double depth = 0;
  int64_t trials = 0, correct = 0;  // trials 0: skipped
};

struct PasskeyRun {
  CacheRun run;
  std::string cache;
  std::vector<PasskeyCell> cells;  // lengths outer, depths inner
  // Share correct over the cells that ran; negative when none ran.
  double accuracy() const;
  double accuracy_at(int64_t length) const;
};

struct PasskeyReport {
  std::string model;
  PasskeyEvalOptions options;
  std::vector<PasskeyRun> runs;
  nlohmann::json to_json() const;
};

PasskeyReport eval_passkey(const LoadedModel& model, const PasskeyEvalOptions& options);

// Greedy answer of one passkey prompt under `cache` (fresh); true when right.
bool answer_passkey(const LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                    const std::vector<int64_t>& prompt, const std::string& key, int64_t chunk);

// ---- Reports --------------------------------------------------------------

// Writes report.json, report.md and the plots (PNG, when gnuplot is installed)
// into `dir`, each atomically; returns the files written.
std::vector<std::filesystem::path> write_report(const PplReport& report, const std::filesystem::path& dir);
std::vector<std::filesystem::path> write_report(const PasskeyReport& report, const std::filesystem::path& dir);

std::string to_markdown(const PplReport& report);
std::string to_markdown(const PasskeyReport& report);

}  // namespace lococo
