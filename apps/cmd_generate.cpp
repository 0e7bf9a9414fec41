// lococo generate: continue a prompt, streaming text to stdout.
#include <chrono>
#include <iostream>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "lococo/core/io_util.h"
#include "lococo/core/memory_stats.h"
#include "lococo/core/progress.h"
#include "lococo/core/text_pieces.h"
#include "lococo/generate/saved_state.h"
#include "commands.h"

namespace lococo::cli {

void add_generate_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    CacheFlags cache;
    GenerateOptions gen;
    std::string prompt, file;
    std::string save_state, load_state;
    bool json = false, quiet = false;
  };
  auto f = std::make_shared<Flags>();
  auto* sub = root.add_subcommand("generate", "Generate text from a prompt under a KV-cache policy");
  add_model_flags(sub, f->model);
  auto* p = sub->add_option("--prompt,-p", f->prompt, "Prompt text");
  sub->add_option("--file,-f", f->file, "Read the prompt from a file ('-' for stdin)")->excludes(p);
  sub->add_option("--max-tokens,-n,--n-predict", f->gen.max_tokens, "Tokens to generate")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24))->capture_default_str();
  sub->add_option("--stop", f->gen.stop, "Stop when this text appears (repeatable)");
  sub->add_flag("!--ignore-eos,!--no-eos", f->gen.stop_at_eos, "Keep generating past the end-of-sequence token");
  sub->add_flag("--json", f->json, "Print one JSON object with the text and timings instead of streaming");
  sub->add_flag("--quiet,-q", f->quiet, "No progress bar while a long prompt is read");
  sub->add_option("--save-state", f->save_state,
                  "After reading the prompt, save the cache's state to FILE (continue later with --load-state)");
  sub->add_option("--load-state", f->load_state,
                  "Continue from a state saved by --save-state (the model's and cache options must match; the "
                  "prompt, optional, continues the text read)");
  add_cache_flags(sub, f->cache);
  add_sampling_flags(sub, f->gen.sampling);
  register_command(sub, [f, sub] {
    LoadedModel m = load_model(f->model);
    // A file is read piece by piece (at line ends) and its tokens run chunk by
    // chunk as they come, so a prompt of any size costs one piece of memory.
    std::unique_ptr<TextPieces> pieces;
    if (!f->file.empty()) pieces = std::make_unique<TextPieces>(f->file);
    if (!pieces && f->prompt.empty() && f->load_state.empty())
      throw std::invalid_argument("empty prompt: give --prompt TEXT or --file PATH");
    const std::string model_fp = model_fingerprint(*m.model, *m.tokenizer);
    const auto started = std::chrono::steady_clock::now();  // time to first token counts from here
    std::optional<SavedState> state;
    if (!f->load_state.empty()) state = read_state(f->load_state);
    const CacheOptions co = state ? saved_state_cache_options(f->cache, m, state->options, *sub)
                                  : inference_cache_options(f->cache, m);
    auto cache = make_cache(m.model->config(), co);
    torch::NoGradGuard no_grad;
    torch::Tensor logits;  // [V]: the next-token logits after what the cache has read
    int64_t tokens_before = 0;
    if (state) {
      logits = restore_state(*state, *cache, co, model_fp, m.model->config().vocab_size);
      tokens_before = state->tokens;
    }
    TextFingerprint text_read(state ? state->text : "");
    PrefillStream reader(*m.model, *cache, co.chunk);
    const auto t0 = std::chrono::steady_clock::now();
    {
      // A prompt of more than a few chunks (at ~4 bytes a token) shows its reading: rate and ETA.
      const int64_t bytes = pieces ? pieces->total_bytes() : static_cast<int64_t>(f->prompt.size());
      Progress bar("reading", bytes, "B", !f->json && !f->quiet && (bytes == 0 || bytes > 16 * co.chunk));
      bool first = !state;  // a fresh text starts with BOS; a continuation of a saved state does not
      int64_t done = 0;
      bool first_piece = true;  // later pieces of a file follow a line end
      auto feed = [&](const std::string& text) {
        const auto ids = first_piece ? m.tokenizer->encode(text, /*add_bos=*/first)
                                     : m.tokenizer->encode_after_line_end(text);
        first = first_piece = false;
        text_read.add(ids);
        reader.feed(ids);
        done += static_cast<int64_t>(text.size());
        bar.set(done, fmt::format("{} tok", reader.tokens()));
      };
      std::string piece;
      if (pieces)
        while (pieces->next(piece)) feed(piece);
      else if (!f->prompt.empty())
        feed(f->prompt);
      if (reader.tokens() > 0) logits = reader.finish();
      bar.finish();
    }
    if (!logits.defined()) throw std::invalid_argument(f->file + ": the prompt file is empty");
    const double prefill_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t tokens_read = tokens_before + reader.tokens();
    if (!f->save_state.empty())
      save_state(f->save_state, *cache, co, model_fp, text_read.digest(), tokens_read, logits);
    GenerateOptions g = f->gen;
    g.chunk = co.chunk;
    double first_text_seconds = -1;  // state read + prompt read + the first text out
    TextCallback print = [&](const std::string& s) {
      if (first_text_seconds < 0)
        first_text_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      if (!f->json) std::cout << s << std::flush;
      return true;
    };
    GenerateResult r = continue_generation(*m.model, *m.tokenizer, *cache, logits, g, print);
    r.prompt_tokens = reader.tokens();
    r.prefill_seconds = prefill_seconds;
    const double decode_tps = r.decode_seconds > 0 ? r.tokens.size() / r.decode_seconds : 0;
    const double prefill_tps = r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0;
    if (f->json) {
      nlohmann::json j = {{"text", r.text},
                          {"prompt_tokens", r.prompt_tokens},
                          {"generated_tokens", r.tokens.size()},
                          {"finish_reason", r.finish_reason},
                          {"prefill_tokens_per_second", prefill_tps},
                          {"decode_tokens_per_second", decode_tps},
                          {"prefill_seconds", r.prefill_seconds},
                          {"time_to_first_token_seconds", first_text_seconds >= 0 ? nlohmann::json(first_text_seconds)
                                                                                  : nlohmann::json(nullptr)},
                          {"cache", cache->describe()},
                          {"cache_bytes", cache->bytes()},
                          {"peak_rss_bytes", peak_rss_bytes()}};
      std::cout << to_json_line(j) << "\n";  // generated text need not be valid UTF-8
    } else {
      std::cout << std::endl;  // before the stats on stderr
      fmt::print(stderr, "[{} prompt tokens at {:.1f} tok/s; {} generated at {:.1f} tok/s; cache {} ({:.1f} KiB); {}]\n",
                 r.prompt_tokens, prefill_tps, r.tokens.size(), decode_tps, cache->describe(),
                 cache->bytes() / 1024.0, r.finish_reason);
    }
    return 0;
  });
}

}  // namespace lococo::cli
