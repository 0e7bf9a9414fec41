#include "lococo/kv/registry.h"
#include "lococo/eval/eval.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "lococo/generate/generate.h"
#include "lococo/core/io_util.h"
#include "lococo/core/memory_stats.h"
#include "lococo/eval/passkey.h"
#include "lococo/eval/perplexity.h"
#include "lococo/core/progress.h"
#include "lococo/core/text_pieces.h"
#include "lococo/tokenizer/token_data.h"

namespace lococo {

// ---- Runs and inputs --------------------------------------------------------

std::vector<CacheRun> cache_runs(const std::vector<std::string>& policies, const std::vector<int64_t>& budgets) {
  if (policies.empty()) throw std::invalid_argument("--policies: empty list");
  const auto known = cache_policy_names();
  bool bounded = false;
  for (const auto& p : policies) {
    if (std::find(known.begin(), known.end(), p) == known.end())
      throw std::invalid_argument(fmt::format("--policies: unknown policy '{}' (known: {})", p, fmt::join(known, ", ")));
    bounded |= is_bounded(p);
  }
  if (bounded && budgets.empty()) throw std::invalid_argument("--budgets: empty list");
  for (int64_t b : budgets)
    if (b <= 0) throw std::invalid_argument(fmt::format("--budgets: {} is not a positive number of slots", b));
  std::vector<CacheRun> runs;
  std::set<std::pair<std::string, int64_t>> seen;
  for (const auto& p : policies) {
    if (!is_bounded(p)) {
      if (seen.insert({p, 0}).second) runs.push_back({p, 0});
      continue;
    }
    for (int64_t b : budgets)
      if (seen.insert({p, b}).second) runs.push_back({p, b});
  }
  return runs;
}

CacheOptions run_cache_options(const CacheOptions& base, const CacheRun& run, const std::filesystem::path& model_dir) {
  CacheOptions o = base;
  o.policy = run.policy;
  if (run.budget > 0) o.budget = run.budget;
  return resolve_compressor(o, model_dir);
}

namespace {

// The ids of `file` piece by piece (BOS first), at most `max_tokens` (0 = all)
// of them; returns how many. `fn` returning false stops early.
int64_t read_file_pieces(const std::filesystem::path& file, const Tokenizer& tokenizer, int64_t max_tokens,
                         const std::function<bool(std::vector<int64_t>& ids)>& fn) {
  TextPieces text(file.string());
  std::string piece;
  int64_t n = 0;
  bool first = true;
  while ((max_tokens <= 0 || n < max_tokens) && text.next(piece)) {
    auto ids = first ? tokenizer.encode(piece, /*add_bos=*/true) : tokenizer.encode_after_line_end(piece);
    first = false;
    if (max_tokens > 0 && n + static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(max_tokens - n);
    n += static_cast<int64_t>(ids.size());
    if (!fn(ids)) break;
  }
  return n;
}

}  // namespace

std::vector<Document> load_documents(const std::vector<std::string>& paths, const Tokenizer& tokenizer,
                                     int64_t max_tokens, int64_t min_tokens) {
  std::vector<Document> docs;
  for (const auto& file : list_text_files(paths)) {
    Document d;
    d.name = file.string();
    d.file = file;
    d.length = read_file_pieces(file, tokenizer, max_tokens, [](std::vector<int64_t>&) { return true; });
    if (d.length >= std::max<int64_t>(2, min_tokens)) docs.push_back(std::move(d));
  }
  if (docs.empty())
    throw std::invalid_argument(fmt::format("--data: no document of at least {} tokens in {}", std::max<int64_t>(2, min_tokens),
                                            fmt::join(paths, ", ")));
  return docs;
}

void for_each_piece(const Document& doc, const Tokenizer* tokenizer,
                    const std::function<void(const std::vector<int64_t>& ids)>& fn) {
  if (doc.file.empty()) return fn(doc.tokens);
  if (!tokenizer) throw std::invalid_argument(doc.name + ": reading a document file needs the model's tokenizer");
  read_file_pieces(doc.file, *tokenizer, doc.length, [&](std::vector<int64_t>& ids) {
    fn(ids);
    return true;
  });
}

std::vector<int64_t> joined_tokens(const std::vector<Document>& docs, const Tokenizer& tokenizer) {
  std::vector<int64_t> out;
  for (const auto& d : docs)
    for_each_piece(d, &tokenizer, [&](const std::vector<int64_t>& ids) {
      for (int64_t id : ids)
        if (id != tokenizer.bos_id()) out.push_back(id);
    });
  return out;
}

// ---- Streaming perplexity ---------------------------------------------------

double PplRun::perplexity() const { return std::exp(mean_nll); }

namespace {

// Adds NLLs of positions [position, position + n) of a document to a run's
// buckets and totals (running sums: no per-token array is kept).
void accumulate(PplRun& run, int64_t position, const float* nll, int64_t n, int64_t bucket, double& nll_sum) {
  for (int64_t i = 0; i < n; ++i) {
    const auto b = static_cast<size_t>((position + i) / bucket);
    if (run.buckets.size() <= b) {
      const auto old = run.buckets.size();
      run.buckets.resize(b + 1);
      for (size_t j = old; j <= b; ++j) run.buckets[j].start = static_cast<int64_t>(j) * bucket;
    }
    run.buckets[b].mean_nll += nll[i];  // a sum until the end
    run.buckets[b].tokens += 1;
    nll_sum += nll[i];
  }
  run.tokens += n;
}

void finish_means(PplRun& run, double nll_sum) {
  run.mean_nll = run.tokens > 0 ? nll_sum / run.tokens : 0;
  for (auto& b : run.buckets)
    if (b.tokens > 0) b.mean_nll /= b.tokens;
}

void check_budgets_below(const std::vector<CacheRun>& runs, int64_t longest, const char* what) {
  for (const auto& r : runs)
    if (r.budget >= longest)
      throw std::invalid_argument(fmt::format("--budget(s): {} slots hold the whole {} ({} tokens): nothing would be "
                                              "compressed; use a smaller budget or longer inputs",
                                              r.budget, what, longest));
}

}  // namespace

PplReport eval_perplexity(const LoadedModel& m, const std::vector<Document>& docs, const PplEvalOptions& o) {
  if (o.bucket <= 0) throw std::invalid_argument("--bucket must be positive");
  if (docs.empty()) throw std::invalid_argument("eval ppl: no documents");
  PplReport report;
  report.model = m.dir.string();
  report.options = o;
  report.documents = static_cast<int64_t>(docs.size());
  int64_t longest = 0;
  for (const auto& d : docs) {
    report.tokens += d.size();
    longest = std::max<int64_t>(longest, d.size());
  }
  auto runs = cache_runs(o.policies, o.budgets);
  check_budgets_below(runs, longest, "longest document");
  const int64_t context = m.model->config().max_position_embeddings;
  if (longest > context && !o.full_beyond_context) {
    const auto before = runs.size();
    runs.erase(std::remove_if(runs.begin(), runs.end(), [](const CacheRun& r) { return !is_bounded(r.policy); }), runs.end());
    if (runs.size() != before)
      spdlog::warn("eval ppl: leaving out the full cache: documents of up to {} tokens exceed the trained context {} "
                   "(--full-beyond-context runs it anyway)", longest, context);
    if (runs.empty())
      throw std::invalid_argument("--policies: only unbounded ones, and the documents exceed the trained context");
  }
  Progress bar("eval ppl", report.tokens * static_cast<int64_t>(runs.size()), "tok", o.progress);
  int64_t done_before = 0;
  for (const auto& run : runs) {
    PplRun r;
    r.run = run;
    const CacheOptions co = run_cache_options(o.cache, run, m.dir);
    PerplexityOptions po;
    po.chunk = co.chunk;
    po.keep_nll = false;
    reset_peak_rss();
    double nll_sum = 0, seconds = 0;
    for (const auto& d : docs) {
      auto cache = make_cache(m.model->config(), co);
      po.on_progress = [&](int64_t done, int64_t) { bar.set(done_before + done, cache->describe()); };
      po.on_nll = [&](int64_t position, const float* nll, int64_t n) {
        accumulate(r, position, nll, n, o.bucket, nll_sum);
      };
      PerplexityStream stream(*m.model, *cache, po);
      for_each_piece(d, m.tokenizer.get(), [&](const std::vector<int64_t>& ids) { stream.feed(ids); });
      const PerplexityResult pr = stream.finish();
      seconds += pr.seconds;
      r.cache = cache->describe();
      r.cache_bytes = std::max(r.cache_bytes, cache->bytes());
      done_before += d.size();
    }
    finish_means(r, nll_sum);
    r.tokens_per_second = seconds > 0 ? report.tokens / seconds : 0;
    r.peak_rss_bytes = peak_rss_bytes();
    report.runs.push_back(std::move(r));
  }
  bar.finish();
  return report;
}

// ---- Passkey retrieval ------------------------------------------------------

double PasskeyRun::accuracy() const {
  int64_t trials = 0, correct = 0;
  for (const auto& c : cells) trials += c.trials, correct += c.correct;
  return trials > 0 ? static_cast<double>(correct) / trials : -1;
}

double PasskeyRun::accuracy_at(int64_t length) const {
  int64_t trials = 0, correct = 0;
  for (const auto& c : cells)
    if (c.length == length) trials += c.trials, correct += c.correct;
  return trials > 0 ? static_cast<double>(correct) / trials : -1;
}

bool answer_passkey(const LlamaModel& model, const Tokenizer& tokenizer, KvCache& cache,
                    const std::vector<int64_t>& prompt, const std::string& key, int64_t chunk) {
  GenerateOptions g;
  g.max_tokens = static_cast<int64_t>(key.size()) + 3;  // a leading space piece, the digits, one more
  g.chunk = chunk;
  g.add_bos = false;  // the prompt has its BOS
  g.sampling.temperature = 0;
  return passkey_correct(generate(model, tokenizer, cache, prompt, g).text, key);
}

namespace {

void check_passkey_options(const PasskeyEvalOptions& o, const Tokenizer& tok) {
  if (o.lengths.empty()) throw std::invalid_argument("--lengths: empty list");
  if (o.depths.empty()) throw std::invalid_argument("--depths: empty list");
  if (o.trials <= 0) throw std::invalid_argument("--trials must be positive");
  const int64_t shortest = passkey_min_length(tok);
  for (int64_t len : o.lengths)
    if (len < shortest)
      throw std::invalid_argument(fmt::format("--lengths: {} tokens is shorter than the passkey prompt's fixed text ({})",
                                              len, shortest));
  for (double d : o.depths)
    if (!(d >= 0.0 && d <= 1.0)) throw std::invalid_argument(fmt::format("--depths: {} is outside [0, 1]", d));
}

// The example of (length, depth, trial): the same for every policy.
PasskeyExample example_for(const Tokenizer& tok, const PasskeyEvalOptions& o, size_t li, size_t di, int64_t trial,
                           const std::vector<int64_t>& filler) {
  std::mt19937_64 rng(o.seed * 1000003ULL + li * 10007ULL + di * 101ULL + static_cast<uint64_t>(trial));
  return make_passkey_example(tok, o.lengths[li], o.depths[di], rng, filler.empty() ? nullptr : &filler);
}

// The tokens of the filler files, documents joined without BOS (empty: none given).
std::vector<int64_t> filler_tokens(const PasskeyEvalOptions& o, const Tokenizer& tok) {
  if (o.filler.empty()) return {};
  std::vector<int64_t> out = joined_tokens(load_documents(o.filler, tok), tok);
  if (out.empty()) throw std::invalid_argument("--filler: the files hold no text");
  return out;
}

}  // namespace

PasskeyReport eval_passkey(const LoadedModel& m, const PasskeyEvalOptions& o) {
  check_passkey_options(o, *m.tokenizer);
  const auto runs = cache_runs(o.policies, {o.budget});
  check_budgets_below(runs, *std::max_element(o.lengths.begin(), o.lengths.end()), "longest prompt");
  PasskeyReport report;
  report.model = m.dir.string();
  report.options = o;
  const int64_t context = m.model->config().max_position_embeddings;
  const auto filler = filler_tokens(o, *m.tokenizer);
  int64_t total = 0;
  for (int64_t len : o.lengths) total += len * static_cast<int64_t>(o.depths.size()) * o.trials;
  Progress bar("eval passkey", total * static_cast<int64_t>(runs.size()), "tok", o.progress);
  int64_t done = 0;
  for (const auto& run : runs) {
    PasskeyRun r;
    r.run = run;
    const CacheOptions co = run_cache_options(o.cache, run, m.dir);
    for (size_t li = 0; li < o.lengths.size(); ++li) {
      const bool skip = !is_bounded(run.policy) && !o.full_beyond_context && o.lengths[li] > context;
      for (size_t di = 0; di < o.depths.size(); ++di) {
        PasskeyCell cell{o.lengths[li], o.depths[di], 0, 0};
        for (int64_t t = 0; t < o.trials && !skip; ++t) {
          const auto ex = example_for(*m.tokenizer, o, li, di, t, filler);
          auto cache = make_cache(m.model->config(), co);
          cell.correct += answer_passkey(*m.model, *m.tokenizer, *cache, ex.prompt, ex.key, co.chunk);
          cell.trials += 1;
          r.cache = cache->describe();
          bar.set(done += o.lengths[li], fmt::format("{} {} tok", run.policy, o.lengths[li]));
        }
        if (skip) bar.set(done += o.lengths[li] * o.trials);
        r.cells.push_back(cell);
      }
    }
    report.runs.push_back(std::move(r));
  }
  bar.finish();
  return report;
}

}  // namespace lococo
