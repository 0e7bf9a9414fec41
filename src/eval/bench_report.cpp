// lococo bench's reports: report.json, report.md and the plots.
#include "lococo/eval/bench.h"

#include <sstream>

#include <fmt/format.h>

#include "lococo/core/cpu_features.h"
#include "lococo/core/io_util.h"
#include "lococo/core/plot.h"

namespace lococo {

// ---- Reports ------------------------------------------------------------------

nlohmann::json BenchReport::to_json() const {
  nlohmann::json pts = nlohmann::json::array();
  for (const auto& p : points)
    pts.push_back({{"policy", p.run.policy}, {"budget", p.run.budget}, {"cache", p.cache}, {"depth", p.depth},
                   {"slots", p.slots}, {"prompt_tokens_per_second", p.prompt_tokens_per_second},
                   {"gen_tokens_per_second", p.gen_tokens_per_second},
                   {"gen_tokens_per_second_mean", p.gen_tokens_per_second_mean},
                   {"gen_forward_tokens_per_second", p.gen_forward_tokens_per_second},
                   {"prompt_gemm_fraction", p.prompt_gemm_fraction}, {"gemm_gflop_s", p.gemm_gflop_s},
                   {"bandwidth_gb_s", p.bandwidth_gb_s}, {"gen_bandwidth_fraction", p.gen_bandwidth_fraction},
                   {"gen_bandwidth_fraction_of_best", p.gen_bandwidth_fraction_of_best}, {"cache_bytes", p.cache_bytes},
                   {"peak_rss_bytes", p.peak_rss_bytes}});
  return {{"kind", "bench"}, {"model", model}, {"params", params}, {"weight_bytes", weight_bytes}, {"dtype", dtype},
          {"threads", threads}, {"blas_threading", blas_threading}, {"prompt", options.prompt}, {"gen", options.gen}, {"chunk", options.cache.chunk},
          {"fill", options.random_fill ? "random-kv" : "model"},
          {"machine", {{"bandwidth_gb_s", machine.bandwidth_gb_s}, {"gemm_gflop_s", machine.gemm_gflop_s},
                       {"attention_gflop_s", machine.attention_gflop_s},
                       {"attention_dtype", dtype_name(machine.attention_dtype)},
                       {"gemm_dtype", dtype_name(machine.dtype)}}},
          {"points", pts}};
}

std::string to_markdown(const BenchReport& r) {
  std::ostringstream md;
  md << fmt::format("# lococo bench\n\nModel `{}`: {:.1f}M parameters, {} weights ({:.1f} MiB read per token), {} "
                    "threads (BLAS threading: {}); prompt {} tokens in chunks of {}, {} generated tokens; fill: {}.\n\n"
                    "Machine (best in the run): {:.1f} GB/s read bandwidth, {:.0f} GFLOP/s {} GEMM (2048^3; attention in {}: {:.0f}). "
                    "% GEMM peak: the time the GEMM rates measured just before and after a prompt (the better) allow its flops "
                    "over the time taken.\n\n",
                    r.model, r.params / 1e6, r.dtype, r.weight_bytes / 1048576.0, r.threads, r.blas_threading, r.options.prompt,
                    r.options.cache.chunk, r.options.gen, r.options.random_fill ? "random K/V" : "model", r.machine.bandwidth_gb_s,
                    r.machine.gemm_gflop_s, dtype_name(r.machine.dtype), dtype_name(r.machine.attention_dtype),
                    r.machine.attention_gflop_s);
  md << "Generation: tokens/s from the median time of one token (mean: tokens / total time). The read bandwidth "
        "is measured between generated tokens (GB/s column: the median); % bandwidth: the median over tokens of "
        "the bytes a token reads (weights + K/V) / its time / the better of the reads just before and after it; "
        "% of best: bytes per token x tokens/s over the best read in the run.\n\n";
  md << "| policy | depth | slots | prompt tok/s | % GEMM peak | gen tok/s | GB/s | % bandwidth | % of best | gen mean | "
        "gen via forward() | x forward() | KV cache (MiB) | peak RSS (MiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& p : r.points)
    md << fmt::format("| {} | {} | {} | {:.1f} | {:.0f}% | {:.2f} | {:.1f} | {:.0f}% | {:.0f}% | {:.2f} | {:.2f} | {:.2f} "
                      "| {:.1f} | {:.0f} |\n",
                      p.run.budget ? fmt::format("{} M={}", p.run.policy, p.run.budget) : p.run.policy, p.depth, p.slots,
                      p.prompt_tokens_per_second, 100 * p.prompt_gemm_fraction, p.gen_tokens_per_second, p.bandwidth_gb_s,
                      100 * p.gen_bandwidth_fraction, 100 * p.gen_bandwidth_fraction_of_best, p.gen_tokens_per_second_mean, p.gen_forward_tokens_per_second,
                      p.gen_tokens_per_second / p.gen_forward_tokens_per_second, p.cache_bytes / 1048576.0,
                      p.peak_rss_bytes / 1048576.0);
  return md.str();
}

std::vector<std::filesystem::path> write_report(const BenchReport& r, const std::filesystem::path& dir) {
  auto written = write_json_and_markdown(dir, r.to_json(), to_markdown(r));
  // Two panels: generation tokens/s and peak RSS against depth, one line per policy.
  std::ostringstream gp;
  std::vector<std::string> labels;
  for (const auto& p : r.points) {
    const std::string label = p.run.budget ? fmt::format("{} M={}", p.run.policy, p.run.budget) : p.run.policy;
    if (std::find(labels.begin(), labels.end(), label) == labels.end()) labels.push_back(label);
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    gp << "$p" << i << " << EOD\n";
    for (const auto& p : r.points)
      if ((p.run.budget ? fmt::format("{} M={}", p.run.policy, p.run.budget) : p.run.policy) == labels[i])
        gp << p.depth << " " << p.gen_tokens_per_second << " " << p.peak_rss_bytes / 1048576.0 << " "
           << p.prompt_tokens_per_second << "\n";
    gp << "EOD\n";
  }
  auto panel = [&](const std::string& title, const std::string& ylabel, int column) {
    gp << "set title " << gnuplot_quote(title) << "\nset ylabel " << gnuplot_quote(ylabel) << "\nplot ";
    for (size_t i = 0; i < labels.size(); ++i)
      gp << (i ? ", " : "") << "$p" << i << " using 1:" << column << " with linespoints title " << gnuplot_quote(labels[i]);
    gp << "\n";
  };
  gp << "set multiplot layout 1,3\nset logscale x 2\nset xlabel 'context depth (tokens)'\nset grid\nset key bottom left\n";
  panel("generation", "tokens/s", 2);
  panel("prompt processing", "tokens/s", 4);
  panel("peak RSS", "MiB", 3);
  gp << "unset multiplot\n";
  render_png_into(written, gp.str(), dir / "bench.png", 1500, 480);
  return written;
}

}  // namespace lococo
