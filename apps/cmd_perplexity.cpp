// lococo perplexity: streaming perplexity of a text file under a KV-cache policy.
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "commands.h"
#include "lococo/perplexity.h"
#include "lococo/progress.h"

namespace lococo::cli {

void add_perplexity_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    CacheFlags cache;
    std::string file;
    int64_t max_tokens = 0;
    bool json = false, quiet = false;
  };
  auto f = std::make_shared<Flags>();
  auto* sub = root.add_subcommand("perplexity", "Streaming perplexity of a text under a KV-cache policy");
  add_model_flags(sub, f->model);
  sub->add_option("--file,-f", f->file, "Text file ('-' for stdin)")->required();
  sub->add_option("--max-tokens", f->max_tokens, "Score only the first N tokens (0 = all)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--json", f->json, "Print the result as JSON on stdout");
  sub->add_flag("--quiet,-q", f->quiet, "No progress bar");
  add_cache_flags(sub, f->cache);
  register_command(sub, [f] {
    LoadedModel m = load_model(f->model);
    auto tokens = m.tokenizer->encode(read_input_text(f->file), /*add_bos=*/true);
    if (f->max_tokens > 0 && static_cast<int64_t>(tokens.size()) > f->max_tokens) tokens.resize(f->max_tokens);
    if (tokens.size() < 2) throw std::invalid_argument(f->file + ": text too short (need at least 2 tokens)");
    CacheOptions co = inference_cache_options(f->cache, m);
    auto cache = make_cache(m.model->config(), co);
    Progress bar("perplexity", static_cast<int64_t>(tokens.size()), "tok", !f->quiet && !f->json);
    PerplexityOptions po;
    po.chunk = co.chunk;
    po.on_progress = [&](int64_t done, int64_t) { bar.set(done); };
    PerplexityResult r = streaming_perplexity(*m.model, *cache, tokens, po);
    bar.finish();
    if (f->json) {
      nlohmann::json j = {{"file", f->file},          {"tokens", r.tokens},
                          {"perplexity", r.perplexity()}, {"mean_nll", r.mean_nll()},
                          {"tokens_per_second", r.tokens_per_second()}, {"seconds", r.seconds},
                          {"cache", cache->describe()}, {"cache_bytes", cache->bytes()}};
      std::cout << j.dump() << "\n";
    } else {
      fmt::print("perplexity {:.4f} over {} tokens ({:.1f} tok/s, cache {}, {:.1f} KiB)\n", r.perplexity(), r.tokens,
                 r.tokens_per_second(), cache->describe(), cache->bytes() / 1024.0);
    }
    return 0;
  });
}

}  // namespace lococo::cli
