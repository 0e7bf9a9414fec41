#include "lococo/train/pretrain.h"

#include <chrono>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/model/model.h"
#include "lococo/model/model_dir.h"
#include "lococo/eval/passkey.h"
#include "lococo/core/progress.h"
#include "lococo/tokenizer/token_data.h"
#include "lococo/tokenizer/tokenizer.h"

namespace lococo {
namespace {

// Sequence length and passkey share at `step` (curriculum).
struct Phase {
  int64_t seq_len, batch;
  double passkey_rate, copy_rate;
};

Phase phase_at(const PretrainOptions& o, int64_t step) {
  if (o.short_seq_len > 0 && step < o.short_steps) {
    const int64_t batch = std::max<int64_t>(1, o.batch * o.seq_len / o.short_seq_len);  // same tokens per step
    return {o.short_seq_len, batch, o.short_passkey_rate >= 0 ? o.short_passkey_rate : o.passkey_rate, o.copy_rate};
  }
  return {o.seq_len, o.batch, o.passkey_rate, o.copy_rate};
}

// One training row of seq_len + 1 tokens: text, or a passkey example padded
// on the left with text so that the answer ends the row.
// Copy rows: their repeats can only be predicted by looking back and copying
// (induction), the skill passkey retrieval needs.
//   twice: a text window followed by itself.
//   tiled: a window of 8..len/2 tokens repeated to fill the row, so most of the
//          row is copyable; half the windows are text, half are tokens drawn
//          from random corpus positions (real tokens, no n-gram shortcut).
torch::Tensor repeated_window(const TokenData& data, int64_t len, const std::string& style, std::mt19937_64& rng) {
  if (style == "twice") {
    auto w = data.random_window((len + 1) / 2, rng);
    return torch::cat({w, w}).narrow(0, 0, len);
  }
  const int64_t w = std::uniform_int_distribution<int64_t>(std::min<int64_t>(8, len), std::max<int64_t>(8, len / 2))(rng);
  torch::Tensor window;  // [w]
  if (std::bernoulli_distribution(0.5)(rng)) {
    window = data.random_window(w, rng);
  } else {
    std::vector<torch::Tensor> tokens;
    for (int64_t i = 0; i < w; ++i) tokens.push_back(data.random_window(1, rng));
    window = torch::cat(tokens);
  }
  return window.repeat({(len + w - 1) / w}).narrow(0, 0, len);
}

// Where passkey rows take their filler from (PretrainOptions' rates; corpus:
// the training tokens without BOS, null when both rates are 0).
struct FillerMix {
  double text = 0, shuffled = 0;
  const std::vector<int64_t>* corpus = nullptr;
};

torch::Tensor make_row(const TokenData& data, const Tokenizer& tok, int64_t len, double passkey_rate,
                       double copy_rate, const std::string& copy_style, const FillerMix& filler, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  if (copy_rate > 0 && u(rng) < copy_rate) return repeated_window(data, len, copy_style, rng);
  const int64_t min_len = passkey_min_length(tok) + 8;  // + answer and EOS
  if (u(rng) >= passkey_rate || len < min_len) return data.random_window(len, rng);
  const int64_t want = std::uniform_int_distribution<int64_t>(std::max(min_len, len / 4), len)(rng);
  const std::vector<int64_t>* corpus = nullptr;
  bool shuffled = false;
  if (filler.corpus) {  // (only then a draw: recipes without it keep their random stream)
    const double f = u(rng);
    if (f < filler.text + filler.shuffled) {
      corpus = filler.corpus;
      shuffled = f >= filler.text;
    }
  }
  PasskeyExample ex = make_passkey_example(tok, want - 8, u(rng), rng, corpus, shuffled);
  std::vector<int64_t> seq = ex.prompt;
  seq.insert(seq.end(), ex.answer.begin(), ex.answer.end());
  seq.push_back(tok.eos_id());
  if (static_cast<int64_t>(seq.size()) > len) seq.erase(seq.begin(), seq.begin() + (seq.size() - len));
  auto tail = torch::tensor(seq, torch::kInt64);
  const int64_t pad = len - tail.size(0);
  return pad > 0 ? torch::cat({data.random_window(pad, rng), tail}) : tail;
}

// The global batch is drawn the same way on every rank (same RNG); this rank
// keeps its rows [dist.shard(batch)).
torch::Tensor make_batch(const TokenData& data, const Tokenizer& tok, const Phase& ph, const std::string& copy_style,
                         const FillerMix& filler, std::mt19937_64& rng, const Distributed& dist) {
  const auto [begin, end] = dist.shard(ph.batch, "the batch (--batch, or its short-phase multiple)");
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < ph.batch; ++b) {
    auto row = make_row(data, tok, ph.seq_len + 1, ph.passkey_rate, ph.copy_rate, copy_style, filler, rng);
    if (b >= begin && b < end) rows.push_back(row);
  }
  return torch::stack(rows);  // [batch / world, T + 1]
}

double validation_loss(const LlamaModel& model, const torch::Tensor& windows) {
  torch::NoGradGuard g;
  double total = 0;
  for (int64_t i = 0; i < windows.size(0); ++i) {
    auto w = windows.narrow(0, i, 1);  // [1, T + 1]
    auto logits = model.forward(w.narrow(1, 0, w.size(1) - 1), nullptr);
    total += next_token_loss(logits, w.narrow(1, 1, w.size(1) - 1)).item<double>();
  }
  return total / windows.size(0);
}

// Share of fixed passkey examples whose answer digits are all the model's
// argmax under teacher forcing: a cheap retrieval signal to watch while
// training (the real evaluation generates; see `lococo eval-passkey`).
double passkey_argmax_accuracy(const LlamaModel& model, const std::vector<PasskeyExample>& examples) {
  torch::NoGradGuard g;
  int64_t correct = 0;
  for (const auto& ex : examples) {
    std::vector<int64_t> seq = ex.prompt;
    seq.insert(seq.end(), ex.answer.begin(), ex.answer.end() - 1);
    const auto n = static_cast<int64_t>(ex.answer.size());
    auto logits = model.forward(torch::tensor(seq, torch::kInt64).unsqueeze(0), nullptr)[0];  // [len, V]
    auto predicted = logits.narrow(0, logits.size(0) - n, n).argmax(-1);                       // [n]
    correct += predicted.equal(torch::tensor(ex.answer, torch::kInt64));
  }
  return examples.empty() ? 0.0 : static_cast<double>(correct) / examples.size();
}

std::vector<PasskeyExample> fixed_passkey_examples(const Tokenizer& tok, int64_t len, int64_t n) {
  std::mt19937_64 rng(777);
  std::vector<PasskeyExample> out;
  if (len < passkey_min_length(tok) + 8) return out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back(make_passkey_example(tok, len - 8, static_cast<double>(i) / std::max<int64_t>(1, n - 1), rng));
  return out;
}

// Weights of an existing model directory (continued pretraining); its shape must be `config`'s.
LlamaWeights initial_weights_from(const std::filesystem::path& dir, const ModelConfig& config) {
  LoadedModel m = load_model_dir(dir);
  if (m.model->config().to_json() != config.to_json())
    throw std::invalid_argument(fmt::format("--init-from {}: its config.json differs from --config", dir.string()));
  LlamaWeights w = m.model->weights();
  for (auto& [name, t] : w.named(config)) *t = t->detach().clone();  // own copies, trainable
  return w;
}

std::vector<std::pair<std::string, torch::Tensor>> trainable_weights(LlamaModel& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [name, t] : model.mutable_weights().named(model.config())) {
    t->requires_grad_(true);
    out.emplace_back(name, *t);
  }
  return out;
}

}  // namespace

PretrainResult pretrain(const ModelConfig& config, const PretrainOptions& o) {
  namespace fs = std::filesystem;
  if (o.steps <= 0 || o.batch <= 0 || o.seq_len <= 1) throw std::invalid_argument("--steps, --batch and --seq-len must be positive");
  if (o.copy_style != "twice" && o.copy_style != "tiled")
    throw std::invalid_argument(fmt::format("--copy-style {}: expected twice or tiled", o.copy_style));
  SentencePieceTokenizer tok(o.tokenizer);
  if (tok.vocab_size() > config.vocab_size)
    throw std::invalid_argument(fmt::format("{}: tokenizer has {} tokens, more than the config's vocab_size {}",
                                            o.tokenizer.string(), tok.vocab_size(), config.vocab_size));
  fs::create_directories(o.out);
  TokenData train(o.data, tok, o.out / "cache");
  std::mt19937_64 rng(o.seed);
  LlamaModel model(config, o.init_from.empty() ? init_weights(config, o.seed) : initial_weights_from(o.init_from, config));
  auto params = trainable_weights(model);
  OptimizerOptions opt = o.optim;
  opt.schedule.total = o.steps;
  Trainer trainer(split_decay("model", params, 1.0, o.weight_decay), opt);
  Distributed dist(o.dist);
  trainer.set_distributed(&dist);

  // Fixed validation windows (their own seed, so resuming does not move them).
  torch::Tensor val_windows;
  if (!o.val.empty() && o.eval_every > 0) {
    TokenData val(o.val, tok, o.out / "cache");
    std::mt19937_64 vrng(12345);
    std::vector<torch::Tensor> ws;
    for (int64_t i = 0; i < o.eval_windows; ++i)
      ws.push_back(val.random_window(std::min(o.seq_len + 1, val.size()), vrng));
    val_windows = torch::stack(ws);
  }

  // Passkeys are checked at the current phase's length: during the short
  // phase, positions beyond short_seq_len are untrained and would read 0%.
  std::map<int64_t, std::vector<PasskeyExample>> passkeys_by_len;
  auto passkeys_at = [&](int64_t len) -> const std::vector<PasskeyExample>& {
    auto it = passkeys_by_len.find(len);
    if (it == passkeys_by_len.end()) it = passkeys_by_len.emplace(len, fixed_passkey_examples(tok, len, o.eval_passkeys)).first;
    return it->second;
  };

  if (o.passkey_text_filler < 0 || o.passkey_shuffled_filler < 0 || o.passkey_text_filler + o.passkey_shuffled_filler > 1)
    throw std::invalid_argument("--passkey-text-filler and --passkey-shuffled-filler must be >= 0 and sum to at most 1");
  std::vector<int64_t> filler_tokens;  // the training text without BOS, for passkey fillers
  FillerMix filler{o.passkey_text_filler, o.passkey_shuffled_filler, nullptr};
  if (filler.text + filler.shuffled > 0) {
    const auto& t = train.tokens();  // [N] int64
    const int64_t* p = t.data_ptr<int64_t>();
    for (int64_t i = 0; i < t.size(0); ++i)
      if (p[i] != tok.bos_id()) filler_tokens.push_back(p[i]);
    filler.corpus = &filler_tokens;
  }

  int64_t start = 0;
  PretrainResult r;
  r.best_val_loss = 1e30;
  const fs::path ckpt = o.out / "checkpoint";
  if (const auto state = resume_checkpoint(trainer, ckpt, o.resume, rng); !state.empty()) {
    start = state.at("step").get<int64_t>();
    r.best_val_loss = state.value("best_val_loss", 1e30);
    if (state.value("world_size", 1) != dist.world_size())
      throw std::invalid_argument(fmt::format("{}: written by {} ranks, resumed with {}", ckpt.string(),
                                              state.value("world_size", 1), dist.world_size()));
  }
  dist.expect_same(start, "the step to resume from");
  dist.broadcast(trainer.parameters());
  r.steps_done = start;  // a resumed run that is done already saves what it has, not step 0
  MetricsLog log;
  if (dist.is_main()) log = MetricsLog(o.out / "metrics.jsonl", /*append=*/start > 0);
  auto save = [&](int64_t step) {
    if (dist.is_main())
      trainer.save_checkpoint(ckpt, {{"step", step}, {"rng", rng_state(rng)}, {"best_val_loss", r.best_val_loss},
                                     {"config", config.to_json()}, {"world_size", dist.world_size()}});
  };
  install_stop_handler();
  Progress bar("pretrain", o.steps, "step", !o.quiet && dist.is_main());
  bar.set(start);
  const auto t0 = std::chrono::steady_clock::now();
  double last_passkey = -1;  // shown in the progress bar once measured
  int64_t tokens = 0;
  for (int64_t step = start; step < o.steps; ++step) {
    const Phase ph = phase_at(o, step);
    auto batch = make_batch(train, tok, ph, o.copy_style, filler, rng, dist);  // [rows, T + 1]
    auto logits = model.forward(batch.narrow(1, 0, ph.seq_len), nullptr);  // [rows, T, V]
    auto loss = next_token_loss(logits, batch.narrow(1, 1, ph.seq_len));
    r.last_loss = loss.item<double>();
    if (!std::isfinite(r.last_loss)) throw std::runtime_error(fmt::format("step {}: loss is NaN or Inf", step));
    loss.backward();
    const double gnorm = trainer.step(step);
    r.last_loss = dist.mean(r.last_loss);
    tokens += ph.batch * ph.seq_len;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.tokens_per_second = tokens / std::max(secs, 1e-9);
    nlohmann::json m = {{"step", step + 1}, {"loss", r.last_loss}, {"lr", trainer.current_lr()},
                        {"grad_norm", gnorm}, {"seq_len", ph.seq_len}, {"tokens_per_second", r.tokens_per_second}};
    const bool eval_now = o.eval_every > 0 && ((step + 1) % o.eval_every == 0 || step + 1 == o.steps);
    if (val_windows.defined() && eval_now && dist.is_main()) {
      m["val_loss"] = validation_loss(model, val_windows);
      r.best_val_loss = std::min(r.best_val_loss, m["val_loss"].get<double>());
    }
    if (eval_now && dist.is_main() && !passkeys_at(ph.seq_len).empty()) {
      m["passkey_argmax"] = passkey_argmax_accuracy(model, passkeys_at(ph.seq_len));
      last_passkey = m["passkey_argmax"].get<double>();
    }
    if (dist.is_main()) log.write(m);
    bar.set(step + 1, fmt::format("loss {:.3f}{} {:.0f} tok/s", r.last_loss,
                                  last_passkey >= 0 ? fmt::format(" passkey {:.0f}%", 100 * last_passkey) : "",
                                  r.tokens_per_second));
    r.steps_done = step + 1;
    dist.wait_for_main("waiting for rank 0's validation");
    if (dist.any(stop_requested()) || (o.stop_after > 0 && step + 1 - start >= o.stop_after && step + 1 < o.steps)) {
      save(step + 1);
      r.interrupted = true;
      break;
    }
    if (o.save_every > 0 && (step + 1) % o.save_every == 0) {
      save(step + 1);
      dist.wait_for_main("waiting for rank 0's checkpoint");
    }
  }
  bar.finish();
  if (!r.interrupted && dist.is_main()) {
    save(r.steps_done);
    save_model_dir(o.out, model);
    fs::copy_file(o.tokenizer, o.out / "tokenizer.model", fs::copy_options::overwrite_existing);
  }
  return r;
}

}  // namespace lococo
