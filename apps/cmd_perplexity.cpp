// lococo perplexity: streaming perplexity of a text file under a KV-cache policy.
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "commands.h"
#include "lococo/eval/perplexity.h"
#include "lococo/core/memory_stats.h"
#include "lococo/core/progress.h"
#include "lococo/core/text_pieces.h"

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
    CacheOptions co = inference_cache_options(f->cache, m);
    auto cache = make_cache(m.model->config(), co);
    // The text is read and tokenised piece by piece (at line ends) and scored as
    // it comes, so memory stays flat however long the input is.
    TextPieces text(f->file);
    Progress bar("perplexity", text.total_bytes(), "B", !f->quiet && !f->json);
    PerplexityOptions po;
    po.chunk = co.chunk;
    po.keep_nll = false;
    PerplexityStream stream(*m.model, *cache, po);
    int64_t fed = 0;
    bool first = true;
    std::string piece;
    while ((f->max_tokens == 0 || fed < f->max_tokens) && text.next(piece)) {
      auto ids = first ? m.tokenizer->encode(piece, /*add_bos=*/true) : m.tokenizer->encode_after_line_end(piece);
      first = false;
      if (f->max_tokens > 0 && fed + static_cast<int64_t>(ids.size()) > f->max_tokens) ids.resize(f->max_tokens - fed);
      fed += static_cast<int64_t>(ids.size());
      stream.feed(ids);
      bar.set(text.bytes_read(), fmt::format("{} tok", fed));
    }
    if (fed < 2) throw std::invalid_argument(f->file + ": text too short (need at least 2 tokens)");
    const PerplexityResult r = stream.finish();
    bar.finish();
    if (f->json) {
      nlohmann::json j = {{"file", f->file},          {"tokens", r.tokens},
                          {"perplexity", r.perplexity()}, {"mean_nll", r.mean_nll()},
                          {"tokens_per_second", r.tokens_per_second()}, {"seconds", r.seconds},
                          {"cache", cache->describe()}, {"cache_bytes", cache->bytes()},
                          {"peak_rss_bytes", peak_rss_bytes()}};
      std::cout << j.dump() << "\n";
    } else {
      fmt::print("perplexity {:.4f} over {} tokens ({:.1f} tok/s, cache {}, {:.1f} KiB)\n", r.perplexity(), r.tokens,
                 r.tokens_per_second(), cache->describe(), cache->bytes() / 1024.0);
    }
    return 0;
  });
}

}  // namespace lococo::cli
