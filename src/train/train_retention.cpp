#include "lococo/train/train_retention.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/core/progress.h"
#include "lococo/eval/passkey.h"
#include "lococo/train/train_compressor.h"

namespace lococo {
namespace {

void check_layers(const std::vector<int64_t>& layers, const char* flag, int64_t num_layers) {
  for (const int64_t l : layers)
    if (l >= num_layers) throw std::invalid_argument(fmt::format("{}: layer {} of a {}-layer model", flag, l, num_layers));
}

// Whether a layer list selects layer i (an empty list selects every layer).
bool contains(const std::vector<int64_t>& layers, int64_t i) {
  return layers.empty() || std::find(layers.begin(), layers.end(), i) != layers.end();
}

// A row's keys, values and targets, the targets as log(eps + t / mean t) per
// layer and head: a loss gradient's scale varies from row to row, and only
// the ranking matters. [layers] x [Hkv, n]
RetentionRow read_row(const LlamaModel& model, const torch::Tensor& row, const RetentionTrainOptions& o) {
  RetentionRow r = retention_targets(model, row, o.cache.chunk, o.target, o.far, o.horizon, o.share);
  if (o.compressor.retention_copy) {
    const auto copied = copied_tokens(row, r.n, o.horizon).to(torch::kFloat32);  // [n]
    for (size_t i = 0; i < r.targets.size(); ++i)
      r.copied.push_back(contains(o.copy_layers, static_cast<int64_t>(i)) ? copied : torch::zeros_like(copied));
  }
  if (o.copy_labels) {
    const auto copied = copied_tokens(row, r.n, o.horizon);  // [n]
    const auto copy_weights = copied.to(torch::kFloat32) * (o.copy_weight - 1) + 1;  // [n]
    for (size_t i = 0; i < r.targets.size(); ++i) {
      const bool labelled = contains(o.copy_layers, static_cast<int64_t>(i));
      if (labelled) r.targets[i] = torch::where(copied, r.targets[i].amax(1, /*keepdim=*/true), r.targets[i]);
      r.weights.push_back(labelled ? copy_weights : torch::ones({r.n}));
    }
  }
  for (auto& t : r.targets) t = (t / t.mean(1, /*keepdim=*/true).clamp_min(1e-30) + o.eps).log();
  return r;
}

// x [Hkv, n] less its mean per head.
torch::Tensor centred(const torch::Tensor& x) { return x - x.mean(1, /*keepdim=*/true); }

// The row's first tokens are the sinks, always kept and never ranked: the
// scores and targets of the others. [Hkv, n - sinks] each
int64_t sinks_of(const LococoCompressor& c, const RetentionRow& r) {
  return std::min(c.options().retention_sinks, r.n - 1);
}

torch::Tensor ranked_scores(const LococoCompressor& c, const RetentionRow& r, int i) {
  const int64_t sinks = sinks_of(c, r), n = r.n - sinks;
  return c.layer(i).retention_scores(r.keys[i].narrow(1, sinks, n), r.values[i].narrow(1, sinks, n));
}

torch::Tensor ranked_targets(const LococoCompressor& c, const RetentionRow& r, int i) {
  const int64_t sinks = sinks_of(c, r);
  return r.targets[i].narrow(1, sinks, r.n - sinks);
}

// The mean of layer i's err [Hkv, n - sinks] under the row's token weights.
torch::Tensor weighted_mean(const LococoCompressor& c, const RetentionRow& r, int i, const torch::Tensor& err) {
  if (r.weights.empty()) return err.mean();
  const int64_t sinks = sinks_of(c, r);
  auto w = r.weights.at(i).narrow(0, sinks, r.n - sinks);  // [n - sinks]
  return (err * w).sum() / (w.sum() * err.size(0));
}

// Share of the K highest targets per layer and head that are also among the K
// highest scores, averaged.
double top_k_agreement(const LococoCompressor& c, const RetentionRow& r, int64_t K) {
  torch::NoGradGuard no_grad;
  double sum = 0;
  int64_t count = 0;
  for (size_t i = 0; i < r.targets.size(); ++i) {
    auto scores = ranked_scores(c, r, static_cast<int>(i));                                // [Hkv, n']
    K = std::min(K, scores.size(1));
    auto want = std::get<1>(ranked_targets(c, r, static_cast<int>(i)).topk(K, 1));         // [Hkv, K]
    auto got = std::get<1>(scores.topk(K, 1));                                              // [Hkv, K]
    auto hit = torch::zeros_like(scores, torch::kBool).scatter_(1, got, true).gather(1, want);  // [Hkv, K]
    sum += hit.to(torch::kFloat64).mean().item<double>();
    ++count;
  }
  return count ? sum / static_cast<double>(count) : 0.0;
}

nlohmann::json run_config(const RetentionTrainOptions& o) {
  return {{"budget", o.cache.budget}, {"keep-rate", o.cache.lococo.keep_rate},
          {"local-window", o.cache.lococo.local_window}, {"retention-hidden", o.compressor.retention_hidden},
          {"length", o.length}, {"target", to_string(o.target)}, {"attention-share", o.share}, {"far", o.far},
          {"horizon", o.horizon}, {"copy-labels", o.copy_labels},
          {"copy-weight", o.copy_weight}, {"copy-layers", o.copy_layers},
          {"train-layers", o.train_layers}, {"copy-head", o.compressor.retention_copy}, {"steps", o.steps},
          {"sequences", o.sequences}, {"recall-rate", o.recall_rate}, {"passkey-rate", o.passkey_rate},
          {"lr", o.optim.lr}, {"seed", o.seed}, {"init", o.init.string()}};
}

// `from` with a fresh copy head (flagging nothing): every parameter kept, the
// last retention layer's score rows included (the copy rows come after them).
std::shared_ptr<LococoCompressor> with_copy_head(const LococoCompressor& from, uint64_t seed) {
  CompressorOptions o = from.options();
  o.retention_copy = true;
  auto c = std::make_shared<LococoCompressor>(o, seed);
  torch::NoGradGuard no_grad;
  auto mine = c->named_parameters();
  for (const auto& p : from.named_parameters()) mine[p.key()].narrow(0, 0, p.value().size(0)).copy_(p.value());
  return c;
}

std::shared_ptr<LococoCompressor> initial_compressor(const LlamaModel& model, const RetentionTrainOptions& o) {
  if (!o.train_layers.empty()) {
    if (o.init.empty()) throw std::invalid_argument("--train-layers needs --init: the other layers come from it");
    auto c = LococoCompressor::load(o.init, model.config(), o.cache);
    if (!c->options().learned_retention())
      throw std::invalid_argument(fmt::format("--train-layers: {} has no learned retention to keep", o.init.string()));
    if (o.compressor.retention_copy && !c->options().retention_copy) c = with_copy_head(*c, o.seed);
    return c;
  }
  if (o.init.empty())
    return std::make_shared<LococoCompressor>(o.compressor.with_shape_of(model.config(), o.cache), o.seed);
  auto from = LococoCompressor::load(o.init, model.config(), o.cache);
  // The convs and lambdas carry over; the retention MLPs are (re)made at --retention-hidden.
  CompressorOptions with = from->options();
  with.retention_hidden = o.compressor.retention_hidden;
  with.retention_sinks = o.compressor.retention_sinks;
  with.retention_copy = o.compressor.retention_copy;
  auto c = std::make_shared<LococoCompressor>(with, o.seed);
  torch::NoGradGuard no_grad;
  auto mine = c->named_parameters();
  for (const auto& [name, t] : from->fusion_parameters()) mine[name].copy_(t);
  return c;
}

}  // namespace

torch::Tensor copied_tokens(const torch::Tensor& row, int64_t n, int64_t horizon) {
  const int64_t T = row.size(0), from = T - horizon;
  auto ids = row.to(torch::kInt64).contiguous();
  const int64_t* x = ids.data_ptr<int64_t>();
  auto copied = torch::zeros({n}, torch::kBool);
  if (from < 3 || n < 3) return copied;
  using Trigram = std::tuple<int64_t, int64_t, int64_t>;
  auto at = [&](int64_t i) { return Trigram{x[i - 2], x[i - 1], x[i]}; };
  std::map<Trigram, int64_t> before;  // trigrams ending before the loss chunk -> count
  for (int64_t i = 2; i < from; ++i) ++before[at(i)];
  std::set<Trigram> repeated;         // trigrams ending inside it
  for (int64_t i = std::max<int64_t>(from, 2); i < T; ++i) repeated.insert(at(i));
  auto* c = copied.data_ptr<bool>();
  for (int64_t i = 2; i < std::min(n, from); ++i) c[i] = before.at(at(i)) == 1 && repeated.count(at(i)) > 0;
  return copied;
}

torch::Tensor copy_head_loss(const LococoCompressor& c, const RetentionRow& r, const std::vector<int64_t>& layers,
                             double pos_weight) {
  if (r.copied.size() != r.targets.size()) throw std::invalid_argument("copy head loss: the row has no copy labels");
  const int64_t sinks = sinks_of(c, r), n = r.n - sinks;
  torch::Tensor sum;
  int64_t count = 0;
  for (size_t i = 0; i < r.targets.size(); ++i) {
    if (!contains(layers, static_cast<int64_t>(i))) continue;
    auto logits = c.layer(static_cast<int>(i)).retention_outputs(r.keys[i].narrow(1, sinks, n),
                                                                 r.values[i].narrow(1, sinks, n)).copy;  // [Hkv, n]
    auto labels = r.copied[i].narrow(0, sinks, n).expand_as(logits);                                    // [Hkv, n]
    auto err = torch::binary_cross_entropy_with_logits(logits, labels, {}, torch::full({1}, pos_weight));
    sum = sum.defined() ? sum + err : err;
    ++count;
  }
  if (!sum.defined()) throw std::invalid_argument("copy head loss: no layer selected");
  return sum / static_cast<double>(count);
}

torch::Tensor retention_regression_loss(const LococoCompressor& c, const RetentionRow& r,
                                        const std::vector<int64_t>& layers) {
  torch::Tensor sum;
  int64_t count = 0;
  for (size_t i = 0; i < r.targets.size(); ++i) {
    if (!contains(layers, static_cast<int64_t>(i))) continue;
    ++count;
    auto scores = ranked_scores(c, r, static_cast<int>(i));  // [Hkv, n - sinks]
    auto err = weighted_mean(c, r, static_cast<int>(i), (centred(scores) - centred(ranked_targets(c, r, static_cast<int>(i)))).pow(2));
    sum = sum.defined() ? sum + err : err;
  }
  if (!sum.defined()) throw std::invalid_argument("retention loss: no layer selected");
  return sum / static_cast<double>(count);
}

torch::Tensor retention_row(const TokenData& data, const Tokenizer& tok, const std::vector<int64_t>& corpus,
                            const RetentionTrainOptions& o, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double kind = u(rng);
  if (kind < o.passkey_rate && o.length >= passkey_min_length(tok) + 8) {
    // Filler: the classic sentences, training text, or training text shuffled, a third each.
    const int filler = std::uniform_int_distribution<int>(0, 2)(rng);
    PasskeyExample ex = make_passkey_example(tok, o.length - 8, u(rng), rng, filler == 0 ? nullptr : &corpus,
                                             filler == 2);
    std::vector<int64_t> seq = ex.prompt;
    seq.insert(seq.end(), ex.answer.begin(), ex.answer.end());
    return torch::tensor(seq, torch::kInt64);
  }
  torch::Tensor row;
  if (kind < o.passkey_rate + o.recall_rate) {
    CompressorTrainOptions recall;
    recall.recall_rate = 1;
    recall.recall_passage = o.recall_passage;
    row = training_sequence(data, o.length, recall, rng).tokens;
  } else {
    row = data.random_window(o.length, rng).clone();
  }
  // A stream starts with BOS, as every prompt does: the first token draws the
  // attention every later query parks (the attention sink), and BOS, not a
  // random window's first token, must be the one the scores learn to keep.
  row[0] = tok.bos_id();
  return row;
}

RetentionTrainResult train_retention(const LlamaModel& model, const Tokenizer& tok, const TokenData& train,
                                     const TokenData* val, const RetentionTrainOptions& o) {
  if (o.compressor.retention_hidden <= 0)
    throw std::invalid_argument("--retention-hidden must be positive: it is what train-retention trains");
  if (o.cache.positions != PositionMode::Cache)
    throw std::invalid_argument("--positions must be cache: learned retention reads keys before RoPE");
  if (o.steps <= 0 || o.sequences <= 0 || o.eval_every < 0 || o.val_rows < 0)
    throw std::invalid_argument("--steps and --sequences must be positive, --eval-every and --val-rows not negative");
  if (o.length > model.config().max_position_embeddings)
    throw std::invalid_argument(fmt::format("--length {} exceeds the model's trained context {}", o.length,
                                            model.config().max_position_embeddings));
  if (o.horizon < 0 || o.length - o.horizon < 2 * o.far)
    throw std::invalid_argument(fmt::format("--length {} less --horizon {} leaves fewer than 2 x --far {} tokens "
                                            "to train on", o.length, o.horizon, o.far));
  if (!(o.recall_rate >= 0 && o.passkey_rate >= 0 && o.recall_rate + o.passkey_rate <= 1))
    throw std::invalid_argument("--recall-rate and --passkey-rate must be >= 0 with a sum of at most 1");
  check_layers(o.copy_layers, "--copy-layers", model.config().num_layers);
  check_layers(o.train_layers, "--train-layers", model.config().num_layers);
  if (o.compressor.retention_copy && o.copy_labels)
    throw std::invalid_argument("--copy-head and --copy-labels: the copy labels go to the head or to the targets");
  auto compressor = initial_compressor(model, o);
  const int64_t top_k = compressor->options().kept() - compressor->options().local_window;
  OptimizerOptions opt = o.optim;
  opt.schedule.total = o.steps;
  std::vector<std::pair<std::string, torch::Tensor>> trained;  // the selected layers' retention MLPs
  for (const auto& [name, t] : compressor->retention_parameters())
    for (int64_t l = 0; l < model.config().num_layers; ++l)
      if (contains(o.train_layers, l) && name.rfind(fmt::format("layers.{}.", l), 0) == 0) trained.emplace_back(name, t);
  Trainer trainer(split_decay("retention", trained, 1.0, 0.0), opt);

  const auto& t = train.tokens();
  const std::vector<int64_t> corpus(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.size(0));
  std::vector<RetentionRow> val_rows;
  {
    std::mt19937_64 vrng(o.seed + 7919);
    const TokenData& from = val ? *val : train;
    for (int64_t i = 0; i < o.val_rows; ++i) val_rows.push_back(read_row(model, retention_row(from, tok, corpus, o, vrng), o));
  }
  std::mt19937_64 rng(o.seed);
  int64_t step = 0;
  double best = -1;
  const std::filesystem::path ckpt = o.out.string() + ".ckpt";
  const nlohmann::json config = run_config(o);
  if (const auto state = resume_checkpoint(trainer, ckpt, o.resume, rng, config); !state.empty()) {
    step = state.at("step").get<int64_t>();
    best = state.value("best_top_k", -1.0);
  }
  MetricsLog log(o.out.string() + ".metrics.jsonl", /*append=*/step > 0);
  auto save = [&] {
    trainer.save_checkpoint(ckpt, {{"step", step}, {"rng", rng_state(rng)}, {"best_top_k", best}, {"config", config}});
  };
  install_stop_handler();
  RetentionTrainResult r;
  Progress bar("train-retention", o.steps, "step", !o.quiet);
  bar.set(step);
  const int64_t start = step;
  while (step < o.steps) {
    double loss_sum = 0;
    for (int64_t i = 0; i < o.sequences; ++i) {
      const RetentionRow row = read_row(model, retention_row(train, tok, corpus, o, rng), o);
      auto loss = retention_regression_loss(*compressor, row, o.train_layers);
      if (o.compressor.retention_copy) loss = loss + copy_head_loss(*compressor, row, o.train_layers, o.copy_weight);
      loss = loss / static_cast<double>(o.sequences);
      if (!std::isfinite(loss.item<double>()))
        throw std::runtime_error(fmt::format("step {}: loss is NaN or Inf", step));
      loss.backward();
      loss_sum += loss.item<double>();
    }
    const double gnorm = trainer.step(step);
    ++step;
    r.last_loss = loss_sum;
    nlohmann::json record = {{"step", step}, {"loss", loss_sum}, {"lr", trainer.current_lr()}, {"grad_norm", gnorm}};
    if (!val_rows.empty() && ((o.eval_every > 0 && step % o.eval_every == 0) || step == o.steps)) {
      double agree = 0, vloss = 0;
      for (const auto& v : val_rows) {
        agree += top_k_agreement(*compressor, v, top_k) / static_cast<double>(val_rows.size());
        torch::NoGradGuard g;
        vloss += retention_regression_loss(*compressor, v, o.train_layers).item<double>() /
                 static_cast<double>(val_rows.size());
      }
      record["val_loss"] = vloss;
      record["val_top_k"] = agree;
      if (agree > best) {
        best = agree;
        compressor->save(o.out);
      }
    }
    log.write(record);
    bar.set(step, fmt::format("loss {:.3f} top-k {:.3f}", loss_sum, std::max(best, 0.0)));
    if (stop_requested() || (o.stop_after > 0 && step - start >= o.stop_after && step < o.steps)) {
      r.interrupted = true;
      break;
    }
  }
  bar.finish();
  save();
  if (val_rows.empty()) compressor->save(o.out);
  r.steps_done = step;
  r.best_top_k = best;
  return r;
}

}  // namespace lococo
