// Reports of `lococo eval`: JSON (schema in eval.h), Markdown tables and
// gnuplot PNGs.
#include <cmath>
#include <sstream>

#include <fmt/format.h>

#include "lococo/eval/eval.h"
#include "lococo/core/io_util.h"
#include "lococo/core/plot.h"

namespace lococo {
namespace {

// "sentences" (the classic filler) or the filler files, comma separated.
std::string passkey_filler_name(const PasskeyEvalOptions& o) {
  return o.filler.empty() ? std::string("sentences") : fmt::format("{}", fmt::join(o.filler, ", "));
}


std::string position_name(PositionMode p) { return p == PositionMode::Cache ? "cache" : "absolute"; }

nlohmann::json or_null(double accuracy) { return accuracy < 0 ? nlohmann::json(nullptr) : nlohmann::json(accuracy); }

std::string percent_or_dash(double accuracy) { return accuracy < 0 ? "-" : fmt::format("{:.0f}%", 100 * accuracy); }

}  // namespace

std::string label(const CacheRun& r) { return r.budget > 0 ? fmt::format("{} M={}", r.policy, r.budget) : r.policy; }

// ---- Perplexity ---------------------------------------------------------------

nlohmann::json PplReport::to_json() const {
  nlohmann::json runs_json = nlohmann::json::array();
  for (const auto& r : runs) {
    nlohmann::json buckets = nlohmann::json::array();
    for (const auto& b : r.buckets)
      buckets.push_back({{"start", b.start}, {"tokens", b.tokens}, {"perplexity", std::exp(b.mean_nll)}});
    runs_json.push_back({{"policy", r.run.policy}, {"budget", r.run.budget}, {"cache", r.cache}, {"tokens", r.tokens},
                         {"mean_nll", r.mean_nll}, {"perplexity", r.perplexity()}, {"buckets", buckets},
                         {"tokens_per_second", r.tokens_per_second}, {"peak_rss_bytes", r.peak_rss_bytes},
                         {"cache_bytes", r.cache_bytes}});
  }
  return {{"kind", "perplexity"}, {"model", model}, {"documents", documents}, {"tokens", tokens},
          {"chunk", options.cache.chunk}, {"positions", position_name(options.cache.positions)},
          {"bucket", options.bucket}, {"runs", runs_json}};
}

std::string to_markdown(const PplReport& r) {
  std::ostringstream md;
  md << fmt::format("# Streaming perplexity\n\nModel `{}`; {} documents, {} tokens; chunk {}, {} positions.\n\n", r.model,
                    r.documents, r.tokens, r.options.cache.chunk, position_name(r.options.cache.positions));
  md << "| policy | budget | PPL | tokens/s | KV cache (KiB) | peak RSS (MiB) |\n|---|---|---|---|---|---|\n";
  for (const auto& run : r.runs)
    md << fmt::format("| {} | {} | {:.3f} | {:.0f} | {:.0f} | {:.0f} |\n", run.run.policy,
                      run.run.budget > 0 ? std::to_string(run.run.budget) : "-", run.perplexity(), run.tokens_per_second,
                      run.cache_bytes / 1024.0, run.peak_rss_bytes / 1048576.0);
  md << fmt::format("\nPPL by position (buckets of {} tokens):\n\n| policy |", r.options.bucket);
  size_t nb = 0;
  for (const auto& run : r.runs) nb = std::max(nb, run.buckets.size());
  for (size_t b = 0; b < nb; ++b) md << fmt::format(" {}+ |", b * r.options.bucket);
  md << "\n|---|" << [&] { std::string s; for (size_t b = 0; b < nb; ++b) s += "---|"; return s; }() << "\n";
  for (const auto& run : r.runs) {
    md << "| " << label(run.run) << " |";
    for (size_t b = 0; b < nb; ++b)
      md << (b < run.buckets.size() && run.buckets[b].tokens > 0 ? fmt::format(" {:.2f} |", std::exp(run.buckets[b].mean_nll))
                                                                   : std::string(" - |"));
    md << "\n";
  }
  return md.str();
}

std::vector<std::filesystem::path> write_report(const PplReport& r, const std::filesystem::path& dir) {
  auto written = write_json_and_markdown(dir, r.to_json(), to_markdown(r));
  std::vector<PlotSeries> series;
  for (const auto& run : r.runs) {
    series.push_back({label(run.run), {}});
    for (const auto& b : run.buckets)
      if (b.tokens > 0) series.back().points.emplace_back(b.start + r.options.bucket / 2, std::exp(b.mean_nll));
  }
  const std::string gp =
      line_chart("set title 'Perplexity by position'\nset xlabel 'token position'\nset ylabel 'PPL'\n", series);
  render_png_into(written, gp, dir / "ppl_by_position.png");
  return written;
}

// ---- Passkey ------------------------------------------------------------------

nlohmann::json PasskeyReport::to_json() const {
  nlohmann::json runs_json = nlohmann::json::array();
  for (const auto& r : runs) {
    nlohmann::json cells = nlohmann::json::array();
    for (const auto& c : r.cells)
      cells.push_back({{"length", c.length}, {"depth", c.depth}, {"trials", c.trials}, {"correct", c.correct},
                       {"accuracy", or_null(c.trials ? static_cast<double>(c.correct) / c.trials : -1)}});
    runs_json.push_back({{"policy", r.run.policy}, {"budget", r.run.budget}, {"cache", r.cache},
                         {"accuracy", or_null(r.accuracy())}, {"cells", cells}});
  }
  return {{"kind", "passkey"}, {"model", model}, {"trials", options.trials}, {"seed", options.seed},
          {"budget", options.budget}, {"chunk", options.cache.chunk}, {"positions", position_name(options.cache.positions)},
          {"lengths", options.lengths}, {"depths", options.depths}, {"filler", passkey_filler_name(options)},
          {"runs", runs_json}};
}

std::string to_markdown(const PasskeyReport& r) {
  std::ostringstream md;
  md << fmt::format("# Passkey retrieval\n\nModel `{}`; {} trials per (length, depth); filler: {}; budget {}, chunk "
                    "{}, {} positions.\n\n| policy |",
                    r.model, r.options.trials, passkey_filler_name(r.options), r.options.budget, r.options.cache.chunk,
                    position_name(r.options.cache.positions));
  for (int64_t len : r.options.lengths) md << fmt::format(" {} |", len);
  md << " all |\n|---|";
  for (size_t i = 0; i <= r.options.lengths.size(); ++i) md << "---|";
  md << "\n";
  for (const auto& run : r.runs) {
    md << "| " << label(run.run) << " |";
    for (int64_t len : r.options.lengths) md << " " << percent_or_dash(run.accuracy_at(len)) << " |";
    md << " " << percent_or_dash(run.accuracy()) << " |\n";
  }
  md << "\n(- : not run; the full cache stops at the trained context unless --full-beyond-context.)\n";
  return md.str();
}

std::vector<std::filesystem::path> write_report(const PasskeyReport& r, const std::filesystem::path& dir) {
  auto written = write_json_and_markdown(dir, r.to_json(), to_markdown(r));
  const auto& lengths = r.options.lengths;
  const auto& depths = r.options.depths;
  for (const auto& run : r.runs) {
    // A heat map: x = prompt length (index), y = depth (index), colour = accuracy.
    std::ostringstream gp;
    gp << "set title " << gnuplot_quote("Passkey accuracy: " + label(run.run)) << "\n"
       << "set xlabel 'prompt length (tokens)'\nset ylabel 'key depth'\nset cbrange [0:1]\nset cblabel 'accuracy'\n"
       << "set palette defined (0 '#b2182b', 0.5 '#f7f7f7', 1 '#2166ac')\nset xtics (";
    for (size_t i = 0; i < lengths.size(); ++i) gp << (i ? ", " : "") << "'" << lengths[i] << "' " << i;
    gp << ")\nset ytics (";
    for (size_t i = 0; i < depths.size(); ++i) gp << (i ? ", " : "") << "'" << depths[i] << "' " << i;
    gp << ")\nset xrange [-0.5:" << lengths.size() - 0.5 << "]\nset yrange [-0.5:" << depths.size() - 0.5 << "]\n$cells << EOD\n";
    for (size_t i = 0; i < run.cells.size(); ++i) {
      const auto& c = run.cells[i];
      if (c.trials > 0)
        gp << i / depths.size() << " " << i % depths.size() << " " << static_cast<double>(c.correct) / c.trials << "\n";
    }
    // Unit boxes centred on each (length, depth) cell, coloured by accuracy.
    gp << "EOD\nplot $cells using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 lc palette notitle\n";
    std::string name = run.run.policy + (run.run.budget > 0 ? fmt::format("_m{}", run.run.budget) : "");
    render_png_into(written, gp.str(), dir / fmt::format("passkey_{}.png", name), 640, 480);
  }
  return written;
}

}  // namespace lococo
