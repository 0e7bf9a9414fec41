// lococo eval ppl | passkey: compare KV-cache policies on one model.
#include <iostream>

#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"
#include "lococo/eval/eval.h"
#include "lococo/eval/recall.h"

namespace lococo::cli {
namespace {

struct EvalCommonFlags {
  ModelFlags model;
  CacheFlags cache;
  std::vector<std::string> policies = default_compared_policies();
  std::string out;
  bool json = false, quiet = false;
};

void add_common_flags(CLI::App* sub, EvalCommonFlags& f) {
  add_model_flags(sub, f.model);
  add_cache_flags(sub, f.cache, /*with_policy=*/false);
  // Policies and budgets are lists here (--policies, --budgets / --budget below).
  sub->remove_option(sub->get_option("--budget"));
  sub->add_option("--compressor", f.cache.options.lococo.compressor,
                  "lococo: compressor file for every budget (default: the model's compressors/m<budget>.safetensors)");
  sub->add_flag("--allow-untrained", f.cache.options.lococo.allow_untrained, "lococo: run with freshly initialised compressors");
  sub->add_option("--policies", f.policies, "Policies to compare, comma separated")
      ->delimiter(',')->check(CLI::IsMember(cache_policy_names()))->capture_default_str();
  sub->add_option("--out", f.out, "Report directory (report.json, report.md, PNG plots)")->required();
  sub->add_flag("--json", f.json, "Print report.json to stdout too");
  sub->add_flag("--quiet,-q", f.quiet, "No progress bar");
}

// The flags every evaluation shares, into its options.
template <class Options>
void apply_common_flags(Options& o, const EvalCommonFlags& f, const LoadedModel& m) {
  o.policies = f.policies;
  o.cache = cache_options(f.cache, m);
  o.progress = !f.quiet;
}

void print_summary(const std::string& markdown, const std::vector<std::filesystem::path>& written, bool json,
                   const nlohmann::json& report) {
  if (json) {
    std::cout << report.dump() << "\n";
    return;
  }
  std::cout << markdown << "\n";
  for (const auto& p : written) std::cout << "wrote " << p.string() << "\n";
}

void add_ppl(CLI::App& eval) {
  struct Flags : EvalCommonFlags {
    std::vector<std::string> data;
    std::vector<int64_t> budgets = {128, 256, 512};
    int64_t max_tokens = 0, min_tokens = 2, bucket = 256;
    bool full_beyond_context = false;
  };
  auto f = std::make_shared<Flags>();
  auto* sub = eval.add_subcommand("ppl", "Streaming perplexity per policy and budget, overall and by position");
  add_common_flags(sub, *f);
  sub->add_option("--data", f->data, "Text files or directories (one document per .txt file)")->required();
  sub->add_option("--budgets", f->budgets, "Budgets M of the bounded policies, comma separated")
      ->delimiter(',')->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--max-tokens", f->max_tokens, "Cut each document to N tokens (0 = whole)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  sub->add_option("--min-tokens", f->min_tokens, "Skip documents shorter than N tokens")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_flag("--full-beyond-context", f->full_beyond_context, "Also run the full cache on documents past the trained context");
  sub->add_option("--bucket", f->bucket, "Width of the position buckets in tokens")
      ->check(CLI::PositiveNumber)->capture_default_str();
  register_command(sub, [f] {
    LoadedModel m = load_model(f->model);
    PplEvalOptions o;
    apply_common_flags(o, *f, m);
    o.budgets = f->budgets;
    o.bucket = f->bucket;
    o.full_beyond_context = f->full_beyond_context;
    const auto docs = load_documents(f->data, *m.tokenizer, f->max_tokens, f->min_tokens);
    const PplReport r = eval_perplexity(m, docs, o);
    print_summary(to_markdown(r), write_report(r, f->out), f->json, r.to_json());
    return 0;
  });
}

void add_passkey(CLI::App& eval) {
  struct Flags : EvalCommonFlags {
    PasskeyEvalOptions o;
    std::vector<std::string> lengths = {"1k", "2k"};
  };
  auto f = std::make_shared<Flags>();
  auto* sub = eval.add_subcommand("passkey", "Passkey retrieval accuracy per (length, depth) and policy");
  add_common_flags(sub, *f);
  sub->add_option("--lengths", f->lengths, "Prompt lengths in tokens (2048 or 2k), comma separated")
      ->delimiter(',')->capture_default_str();
  sub->add_option("--depths", f->o.depths, "Key depths in [0, 1], comma separated")
      ->delimiter(',')->capture_default_str();
  sub->add_option("--trials", f->o.trials, "Examples per (length, depth)")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--seed", f->o.seed, "Seed of the keys (the same examples for every policy)")->capture_default_str();
  sub->add_option("--budget", f->o.budget, "Budget M of the bounded policies")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_flag("--full-beyond-context", f->o.full_beyond_context, "Also run the full cache past the trained context");
  sub->add_option("--filler", f->o.filler,
                  "Text files or directories the filler is cut from (default: the classic repeated sentences)");
  register_command(sub, [f] {
    PasskeyEvalOptions o = f->o;
    o.lengths = parse_token_counts(f->lengths, "--lengths");
    LoadedModel m = load_model(f->model);
    apply_common_flags(o, *f, m);
    const PasskeyReport r = eval_passkey(m, o);
    print_summary(to_markdown(r), write_report(r, f->out), f->json, r.to_json());
    return 0;
  });
}

void add_recall(CLI::App& eval) {
  struct Flags : EvalCommonFlags {
    RecallEvalOptions o;
    std::vector<std::string> data;
    std::vector<std::string> gaps = {"1k", "4k", "16k"};
  };
  auto f = std::make_shared<Flags>();
  auto* sub = eval.add_subcommand("recall", "Long-range recall per policy and gap: a passage, a gap, the passage again");
  add_common_flags(sub, *f);
  sub->add_option("--data", f->data, "Text files or directories: passages and gaps come from their tokens")->required();
  sub->add_option("--gaps", f->gaps, "Gaps between the two occurrences in tokens (2048 or 2k), comma separated")
      ->delimiter(',')->capture_default_str();
  sub->add_option("--passage", f->o.passage, "Tokens of the passage")->check(CLI::Range(2, 1 << 16))->capture_default_str();
  sub->add_option("--lead", f->o.lead, "Tokens of text before the passage's first occurrence")
      ->check(CLI::Range(0, 1 << 24))->capture_default_str();
  sub->add_option("--kind", f->o.kind, "Passage: shuffled (corpus tokens in random order) or text (a corpus window)")
      ->check(CLI::IsMember({"shuffled", "text"}))->capture_default_str();
  sub->add_option("--trials", f->o.trials, "Documents per gap")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--seed", f->o.seed, "Seed of the passages and gaps (the same documents for every policy)")
      ->capture_default_str();
  sub->add_option("--budget", f->o.budget, "Budget M of the bounded policies")->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_flag("--full-beyond-context", f->o.full_beyond_context, "Also run the full cache past the trained context");
  register_command(sub, [f] {
    RecallEvalOptions o = f->o;
    o.gaps = parse_token_counts(f->gaps, "--gaps");
    LoadedModel m = load_model(f->model);
    apply_common_flags(o, *f, m);
    const std::vector<int64_t> corpus = joined_tokens(load_documents(f->data, *m.tokenizer), *m.tokenizer);
    const RecallReport r = eval_recall(m, corpus, o);
    print_summary(to_markdown(r), write_report(r, f->out), f->json, r.to_json());
    return 0;
  });
}

}  // namespace

void add_eval_command(CLI::App& root) {
  auto* eval = root.add_subcommand("eval", "Evaluate KV-cache policies: streaming perplexity, passkey retrieval, long-range recall");
  eval->require_subcommand(1);
  add_ppl(*eval);
  add_passkey(*eval);
  add_recall(*eval);
}

}  // namespace lococo::cli
