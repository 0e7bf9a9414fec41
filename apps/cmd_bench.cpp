// lococo bench: prompt and generation tokens/s at context depths, per policy,
// as fractions of this machine's measured bandwidth and GEMM rate.
#include <iostream>

#include "cli_common.h"
#include "commands.h"
#include "lococo/eval/bench.h"

namespace lococo::cli {

void add_bench_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    CacheFlags cache;
    BenchOptions o;
    std::vector<std::string> contexts = {"1k", "4k"};
    std::string out, fill = "model";
    bool json = false, quiet = false;
  };
  auto f = std::make_shared<Flags>();
  auto* sub = root.add_subcommand("bench", "Prompt and generation speed at context depths per KV-cache policy");
  add_model_flags(sub, f->model);
  add_cache_flags(sub, f->cache, /*with_policy=*/false);
  sub->remove_option(sub->get_option("--budget"));  // one --budget below, for the bounded policies
  sub->add_option("--compressor", f->cache.options.lococo.compressor,
                  "lococo: compressor file (default: the model's compressors/m<budget>.safetensors)");
  sub->add_flag("--allow-untrained", f->cache.options.lococo.allow_untrained, "lococo: run with a freshly initialised compressor");
  sub->add_option("--context", f->contexts, "Depths: tokens in the cache before timing (2048 or 2k), comma separated")
      ->delimiter(',')->capture_default_str();
  sub->add_option("--policies", f->o.policies, "Policies, comma separated")
      ->delimiter(',')->check(CLI::IsMember(cache_policy_names()))->capture_default_str();
  sub->add_option("--budget", f->o.budget, "Budget M of the bounded policies")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--prompt", f->o.prompt, "Prompt tokens timed at each depth")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--gen", f->o.gen, "Generated tokens timed at each depth")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--fill", f->fill, "How the cache reaches the depth: model (run random tokens through the model) or "
                                     "random-kv (drive the cache with random keys/values: same slots and positions, "
                                     "much faster for big models)")
      ->check(CLI::IsMember({"model", "random-kv"}))->capture_default_str();
  sub->add_option("--seed", f->o.seed, "Seed of the fill")->capture_default_str();
  sub->add_option("--out", f->out, "Report directory (report.json, report.md, bench.png)")->required();
  sub->add_flag("--json", f->json, "Print report.json to stdout too");
  sub->add_flag("--quiet,-q", f->quiet, "No progress bar");
  register_command(sub, [f] {
    BenchOptions o = f->o;
    o.contexts = parse_token_counts(f->contexts, "--context");
    o.random_fill = f->fill == "random-kv";
    o.progress = !f->quiet;
    LoadedModel m = load_model(f->model);
    o.cache = cache_options(f->cache, m);
    const BenchReport r = run_bench(m, o);
    const auto written = write_report(r, f->out);
    if (f->json) {
      std::cout << r.to_json().dump() << "\n";
      return 0;
    }
    std::cout << to_markdown(r) << "\n";
    for (const auto& p : written) std::cout << "wrote " << p.string() << "\n";
    return 0;
  });
}

}  // namespace lococo::cli
