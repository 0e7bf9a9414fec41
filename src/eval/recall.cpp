#include "lococo/eval/recall.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/core/io_util.h"
#include "lococo/core/plot.h"
#include "lococo/core/progress.h"
#include "lococo/eval/perplexity.h"

namespace lococo {
namespace {

// P corpus tokens from a random offset; shuffled for the "shuffled" kind.
std::vector<int64_t> passage_from(const std::vector<int64_t>& corpus, int64_t p, const std::string& kind,
                                  std::mt19937_64& rng) {
  const auto start = std::uniform_int_distribution<size_t>(0, corpus.size() - static_cast<size_t>(p))(rng);
  std::vector<int64_t> out(corpus.begin() + static_cast<std::ptrdiff_t>(start),
                           corpus.begin() + static_cast<std::ptrdiff_t>(start + static_cast<size_t>(p)));
  if (kind == "shuffled") std::shuffle(out.begin(), out.end(), rng);
  return out;
}

// G corpus tokens from a random offset, wrapping around a short corpus.
std::vector<int64_t> gap_from(const std::vector<int64_t>& corpus, int64_t g, std::mt19937_64& rng) {
  auto at = std::uniform_int_distribution<size_t>(0, corpus.size() - 1)(rng);
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(g));
  for (int64_t i = 0; i < g; ++i, at = (at + 1) % corpus.size()) out.push_back(corpus[at]);
  return out;
}

// The mean NLL of positions [begin, end) of `tokens` read through a fresh cache.
double passage_nll(const LlamaModel& model, const CacheOptions& co, const std::vector<int64_t>& tokens, int64_t begin,
                   int64_t end, const std::function<void(int64_t)>& on_progress) {
  auto cache = make_cache(model.config(), co);
  PerplexityOptions po;
  po.chunk = co.chunk;
  po.on_progress = [&](int64_t done, int64_t) { on_progress(done); };
  const PerplexityResult r = streaming_perplexity(model, *cache, tokens, po);
  double sum = 0;
  for (int64_t pos = begin; pos < end; ++pos) sum += r.nll[static_cast<size_t>(pos - 1)];  // nll[i] scores i + 1
  return sum / static_cast<double>(end - begin);
}

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

// "| policy | G=... |" and its rule.
std::string gap_header(const std::vector<int64_t>& gaps) {
  std::string h = "| policy |", rule = "|---|";
  for (int64_t g : gaps) {
    h += fmt::format(" G={} |", g);
    rule += "---|";
  }
  return h + "\n" + rule + "\n";
}

}  // namespace

RecallDocuments make_recall_documents(const std::vector<int64_t>& corpus, int64_t bos, int64_t lead, int64_t passage,
                                      int64_t gap, const std::string& kind, std::mt19937_64& rng) {
  if (kind != "shuffled" && kind != "text")
    throw std::invalid_argument(fmt::format("--kind must be shuffled or text (got '{}')", kind));
  if (passage < 2) throw std::invalid_argument(fmt::format("--passage must be at least 2 tokens (got {})", passage));
  if (gap < 0) throw std::invalid_argument(fmt::format("--gaps: {} is not a token count", gap));
  if (lead < 0) throw std::invalid_argument(fmt::format("--lead: {} is not a token count", lead));
  if (static_cast<int64_t>(corpus.size()) < 2 * passage)
    throw std::invalid_argument(fmt::format("--data: {} tokens, fewer than two passages of {}", corpus.size(), passage));
  const auto shown = passage_from(corpus, passage, kind, rng);
  const auto decoy = passage_from(corpus, passage, kind, rng);
  const auto middle = gap_from(corpus, gap, rng);
  const auto opening = gap_from(corpus, lead, rng);
  RecallDocuments d;
  for (auto* doc : {&d.repeat, &d.decoy}) {
    doc->push_back(bos);
    doc->insert(doc->end(), opening.begin(), opening.end());
    doc->insert(doc->end(), doc == &d.repeat ? shown.begin() : decoy.begin(), doc == &d.repeat ? shown.end() : decoy.end());
    doc->insert(doc->end(), middle.begin(), middle.end());
    doc->insert(doc->end(), shown.begin(), shown.end());
  }
  d.scored_end = static_cast<int64_t>(d.repeat.size());
  d.scored_begin = d.scored_end - passage + 1;
  return d;
}

double RecallReport::reference_gain(size_t g) const {
  for (const auto& r : runs) {
    if (is_bounded(r.run.policy)) continue;
    for (size_t i = std::min(g + 1, r.cells.size()); i-- > 0;)
      if (r.cells[i].trials > 0) return r.cells[i].gain();
  }
  return -1;
}

double RecallReport::recall_kept(const RecallRun& run, size_t g) const {
  const double ref = reference_gain(g);
  if (g >= run.cells.size() || run.cells[g].trials == 0 || !(ref > 0)) return std::numeric_limits<double>::quiet_NaN();
  return run.cells[g].gain() / ref;
}

RecallReport eval_recall(const LoadedModel& m, const std::vector<int64_t>& corpus, const RecallEvalOptions& o) {
  if (o.gaps.empty()) throw std::invalid_argument("--gaps: empty list");
  if (o.trials <= 0) throw std::invalid_argument(fmt::format("--trials must be positive (got {})", o.trials));
  RecallReport report;
  report.model = m.dir.string();
  report.options = o;
  const auto runs = cache_runs(o.policies, {o.budget});
  const int64_t context = m.model->config().max_position_embeddings;
  int64_t total = 0;
  for (int64_t g : o.gaps) total += 2 * (o.lead + 2 * o.passage + g + 1) * o.trials;
  Progress bar("eval recall", total * static_cast<int64_t>(runs.size()), "tok", o.progress);
  int64_t done = 0;
  torch::NoGradGuard no_grad;
  for (const auto& run : runs) {
    RecallRun r;
    r.run = run;
    const CacheOptions co = run_cache_options(o.cache, run, m.dir);
    r.cache = make_cache(m.model->config(), co)->describe();
    for (size_t gi = 0; gi < o.gaps.size(); ++gi) {
      RecallCell cell;
      cell.gap = o.gaps[gi];
      const int64_t length = o.lead + 2 * o.passage + cell.gap + 1;
      const bool skip = !is_bounded(run.policy) && !o.full_beyond_context && length > context;
      for (int64_t t = 0; t < o.trials && !skip; ++t) {
        // The same documents for every policy: a generator per (gap, trial).
        std::mt19937_64 rng(o.seed * 1000003 + gi * 7919 + static_cast<uint64_t>(t));
        const auto docs = make_recall_documents(corpus, m.tokenizer->bos_id(), o.lead, o.passage, cell.gap, o.kind, rng);
        const auto progress = [&](int64_t n) { bar.set(done + n, r.cache); };
        cell.repeat_nll += passage_nll(*m.model, co, docs.repeat, docs.scored_begin, docs.scored_end, progress);
        done += length;
        cell.floor_nll += passage_nll(*m.model, co, docs.decoy, docs.scored_begin, docs.scored_end, progress);
        done += length;
        ++cell.trials;
      }
      if (cell.trials > 0) {
        cell.repeat_nll /= static_cast<double>(cell.trials);
        cell.floor_nll /= static_cast<double>(cell.trials);
      } else {
        done += 2 * length * o.trials;
      }
      r.cells.push_back(cell);
    }
    report.runs.push_back(std::move(r));
  }
  return report;
}

nlohmann::json RecallReport::to_json() const {
  nlohmann::json runs_json = nlohmann::json::array();
  for (const auto& r : runs) {
    nlohmann::json cells = nlohmann::json::array();
    for (size_t g = 0; g < r.cells.size(); ++g) {
      const auto& c = r.cells[g];
      cells.push_back({{"gap", c.gap}, {"trials", c.trials},
                       {"repeat_nll", c.trials ? nlohmann::json(c.repeat_nll) : nlohmann::json(nullptr)},
                       {"floor_nll", c.trials ? nlohmann::json(c.floor_nll) : nlohmann::json(nullptr)},
                       {"gain", c.trials ? nlohmann::json(c.gain()) : nlohmann::json(nullptr)},
                       {"recall_kept", number_or_null(recall_kept(r, g))}});
    }
    runs_json.push_back({{"policy", r.run.policy}, {"budget", r.run.budget}, {"cache", r.cache}, {"cells", cells}});
  }
  return {{"kind", "recall"}, {"model", model}, {"passage", options.passage}, {"lead", options.lead},
          {"passage_kind", options.kind},
          {"trials", options.trials}, {"seed", options.seed}, {"budget", options.budget},
          {"chunk", options.cache.chunk}, {"positions", to_string(options.cache.positions)}, {"gaps", options.gaps},
          {"runs", runs_json}};
}

std::string to_markdown(const RecallReport& r) {
  std::ostringstream md;
  md << fmt::format("# Long-range recall\n\nModel `{}`; {} passages of {} tokens ({}) after {} tokens of text, per "
                    "gap; budget {}, chunk {}, {} positions.\n\nRecall kept (gain in NLL on the repeat over a decoy-first document, as a share of the "
                    "full cache's gain):\n\n",
                    r.model, r.options.trials, r.options.passage, r.options.kind, r.options.lead, r.options.budget,
                    r.options.cache.chunk, to_string(r.options.cache.positions));
  md << gap_header(r.options.gaps);
  for (const auto& run : r.runs) {
    md << "| " << label(run.run) << " |";
    for (size_t g = 0; g < run.cells.size(); ++g) {
      const double k = r.recall_kept(run, g);
      md << (std::isfinite(k) ? fmt::format(" {:.2f} |", k) : std::string(" - |"));
    }
    md << "\n";
  }
  md << "\nMean NLL of the repeated passage / after a decoy:\n\n" << gap_header(r.options.gaps);
  for (const auto& run : r.runs) {
    md << "| " << label(run.run) << " |";
    for (const auto& c : run.cells)
      md << (c.trials ? fmt::format(" {:.3f} / {:.3f} |", c.repeat_nll, c.floor_nll) : std::string(" - |"));
    md << "\n";
  }
  md << "\n(- : not run; the full cache stops at the trained context unless --full-beyond-context, and past it its "
        "gain at the longest gap it ran is the reference.)\n";
  return md.str();
}

std::vector<std::filesystem::path> write_report(const RecallReport& r, const std::filesystem::path& dir) {
  auto written = write_json_and_markdown(dir, r.to_json(), to_markdown(r));
  std::vector<PlotSeries> series;
  for (const auto& run : r.runs) {
    series.push_back({label(run.run), {}});
    for (size_t g = 0; g < run.cells.size(); ++g)
      if (const double k = r.recall_kept(run, g); std::isfinite(k)) series.back().points.emplace_back(run.cells[g].gap, k);
  }
  const std::string gp = line_chart("set title 'Long-range recall kept'\nset xlabel 'gap (tokens)'\n"
                                    "set ylabel 'recall kept'\nset logscale x 2\nset offsets graph 0.02, graph 0.02, graph 0.08, graph 0.08\n", series);
  render_png_into(written, gp, dir / "recall.png");
  return written;
}

}  // namespace lococo
