#include "lococo/train/train_compressor.h"

#include <algorithm>
#include <numeric>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

#include "lococo/kv/lococo.h"
#include "lococo/kv/registry.h"
#include "lococo/model/lora.h"
#include "lococo/eval/perplexity.h"
#include "lococo/core/progress.h"

namespace lococo {
namespace {

// `out` + suffix, in o.state_dir when one is given.
std::filesystem::path state_file(const CompressorTrainOptions& o, const std::string& suffix) {
  if (o.state_dir.empty()) return o.out.string() + suffix;
  return o.state_dir / (o.out.filename().string() + suffix);
}

std::vector<std::pair<std::string, torch::Tensor>> norm_weights(LlamaModel& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [name, t] : model.mutable_weights().named(model.config()))
    if (name.find("norm") != std::string::npos) {
      t->requires_grad_(true);
      out.emplace_back(name, *t);
    }
  return out;
}

std::vector<ParamGroup> parameter_groups(LococoCompressor& compressor, LlamaModel& model,
                                         const CompressorTrainOptions& o) {
  std::vector<std::pair<std::string, torch::Tensor>> conv;
  // Learned retention is trained by train-retention, not by the language-model loss.
  for (const auto& [name, t] : compressor.fusion_parameters()) conv.emplace_back("compressor." + name, t);
  auto groups = split_decay("compressor", conv, o.memory_lr_scale, 0.0);
  if (o.train_norms) {
    auto norms = split_decay("norms", norm_weights(model), o.norm_lr_scale, 0.0);
    groups.insert(groups.end(), norms.begin(), norms.end());
  }
  if (auto lora = lora_tensors(model); !lora.empty()) {  // `tune` attached adapters
    auto g = split_decay("lora", lora, o.lora_lr_scale, 0.0);
    groups.insert(groups.end(), g.begin(), g.end());
  }
  return groups;
}

// What a resumed run must share with the run that wrote its checkpoint, by flag name.
nlohmann::json run_config(const CompressorTrainOptions& o) {
  const auto& c = o.compressor;
  return {{"budget", o.cache.budget}, {"chunk", o.cache.chunk}, {"buffer", o.cache.buffer},
          {"positions", to_string(o.cache.positions)}, {"keep-rate", o.cache.lococo.keep_rate},
          {"local-window", o.cache.lococo.local_window}, {"score-decay", o.cache.lococo.score_decay},
          {"window-last", o.cache.lococo.window_last}, {"kernel", c.kernel}, {"conv-layers", c.conv_layers},
          {"slot-features", c.slot_features}, {"lambda-sigmoid", c.lambda_sigmoid}, {"segments", o.segments},
          {"steps", o.steps}, {"grad-accum", o.grad_accum}, {"bptt-chunks", o.bptt_chunks},
          {"objective", o.objective}, {"recall-rate", o.recall_rate}, {"recall-passage", o.recall_passage},
          {"recall-lead", o.recall_lead}, {"recall-weight", o.recall_weight}, {"recall-gap", o.recall_gap},
          {"sequences", o.sequences}, {"lr", o.optim.lr}, {"memory-lr-scale", o.memory_lr_scale},
          {"train-norms", o.train_norms}, {"seed", o.seed}};
}

// The mean NLL of the recall rows' repeated passages: what a compressor keeps
// of the far context, logged beside the loss.
struct RecallNll {
  double sum = 0;
  int64_t count = 0;
  void add(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& repeat) {
    torch::NoGradGuard no_grad;
    const auto rows = torch::nonzero(repeat).flatten();
    if (rows.numel() == 0) return;
    sum += torch::nn::functional::cross_entropy(
               logits.index_select(0, rows), targets.index_select(0, rows),
               torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)).item<double>();
    count += rows.numel();
  }
  double take() {
    const double mean = sum / static_cast<double>(count);
    sum = 0;
    count = 0;
    return mean;
  }
};

ValidationPpl validate(const LlamaModel& model, const std::shared_ptr<LococoCompressor>& compressor,
                       const TokenData& val, const CompressorTrainOptions& o) {
  torch::NoGradGuard g;
  auto tokens = val.tokens().narrow(0, 0, std::min(o.val_tokens, val.size()));
  ValidationPpl r;
  auto lococo = make_lococo_cache(model.config(), o.cache, compressor);
  r.lococo = streaming_ppl(model, *lococo, tokens, o.cache.chunk);
  auto hh = make_lococo_cache(model.config(), o.cache, nullptr);
  r.lococo_hh = streaming_ppl(model, *hh, tokens, o.cache.chunk);
  CacheOptions s = o.cache;
  s.policy = baseline_policy();
  auto streaming = make_cache(model.config(), s);
  r.streaming = streaming_ppl(model, *streaming, tokens, o.cache.chunk);
  return r;
}

}  // namespace

torch::Tensor distillation_loss(const torch::Tensor& teacher_logp, const torch::Tensor& student_logits) {
  auto student_logp = torch::log_softmax(student_logits.to(torch::kFloat32), -1);  // [B, V]
  return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1).mean();
}

TrainingRow training_sequence(const TokenData& data, int64_t length, const CompressorTrainOptions& o,
                              std::mt19937_64& rng) {
  const bool recall = o.recall_rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < o.recall_rate;
  if (!recall) return {data.random_window(length, rng), torch::ones({length - 1}), torch::zeros({length - 1}, torch::kBool)};
  const int64_t p = o.recall_passage;
  if (p < 2 || 2 * p >= length)
    throw std::invalid_argument(fmt::format("--recall-passage {} does not fit twice in a sequence of {}", p, length));
  auto passage = data.random_window(p, rng).clone();  // [P]
  if (o.recall_shuffled) {
    std::vector<int64_t> order(static_cast<size_t>(p));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    passage = passage.index_select(0, torch::tensor(order, torch::kInt64));
  }
  const int64_t free = length - 2 * p;
  if (o.recall_gap < 0 || o.recall_gap > free)
    throw std::invalid_argument(fmt::format("--recall-gap {} must be in [0, {}] (the sequence less two passages)",
                                            o.recall_gap, free));
  const int64_t gap = o.recall_gap == 0 ? -1 : std::uniform_int_distribution<int64_t>(o.recall_gap / 2, o.recall_gap)(rng);
  const int64_t spare = gap < 0 ? free : free - gap;  // lead + tail
  const auto max_lead = static_cast<int64_t>(std::clamp(o.recall_lead, 0.0, 1.0) * static_cast<double>(spare));
  const int64_t lead = gap < 0 ? std::uniform_int_distribution<int64_t>(0, max_lead)(rng)
                               : std::uniform_int_distribution<int64_t>(0, spare)(rng);
  const int64_t between = gap < 0 ? free - lead : gap;
  auto text = data.random_window(free, rng);  // [free]: the lead, the gap, the tail
  const int64_t repeat_at = lead + p + between;
  TrainingRow row;
  row.tokens = torch::cat({text.narrow(0, 0, lead), passage, text.narrow(0, lead, between), passage,
                           text.narrow(0, lead + between, free - lead - between)});  // [length]
  row.weights = torch::ones({length - 1});
  // Predictions of the repeat's tokens after its first (only those have a cue).
  row.weights.narrow(0, repeat_at, p - 1).fill_(o.recall_weight);
  row.repeat = torch::zeros({length - 1}, torch::kBool);
  row.repeat.narrow(0, repeat_at, p - 1).fill_(true);
  return row;
}

torch::Tensor weighted_next_token_loss(const torch::Tensor& logits, const torch::Tensor& targets,
                                       const torch::Tensor& weights) {
  auto nll = torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));  // [B]
  return (nll * weights.reshape({-1})).sum() / static_cast<double>(nll.size(0));
}

double streaming_ppl(const LlamaModel& model, KvCache& cache, const torch::Tensor& tokens, int64_t chunk) {
  const int64_t* p = tokens.data_ptr<int64_t>();
  std::vector<int64_t> ids(p, p + tokens.size(0));
  PerplexityOptions po;
  po.chunk = chunk;
  return streaming_perplexity(model, cache, ids, po).perplexity();
}

CompressorTrainResult train_compressor(LlamaModel& model, const TokenData& train, const TokenData* val,
                                       const CompressorTrainOptions& o) {
  if (o.segments < 2 || o.steps <= 0 || o.grad_accum <= 0 || o.sequences <= 0)
    throw std::invalid_argument("--segments must be >= 2, --steps, --grad-accum and --sequences positive");
  Distributed dist(o.dist);
  const auto [seq_begin, seq_end] = dist.shard(o.sequences, "--sequences");
  const int64_t local = seq_end - seq_begin;
  const int64_t B = o.cache.chunk;
  auto compressor = std::make_shared<LococoCompressor>(o.compressor.with_shape_of(model.config(), o.cache), o.seed);
  OptimizerOptions opt = o.optim;
  opt.schedule.total = o.steps;
  Trainer trainer(parameter_groups(*compressor, model, o), opt);
  trainer.set_distributed(&dist);
  CacheOptions training_cache = o.cache;
  training_cache.bptt_chunks = o.bptt_chunks;
  if (o.bptt_chunks < 1 || o.bptt_chunks > o.grad_accum)
    throw std::invalid_argument(fmt::format(
        "--bptt-chunks {} needs --grad-accum >= it (got {}): an optimiser step changes the parameters that the "
        "stored history was computed with, so each step ends a BPTT window", o.bptt_chunks, o.grad_accum));
  if (o.keep != "best" && o.keep != "last")
    throw std::invalid_argument(fmt::format("--keep must be best or last (got '{}')", o.keep));
  if (o.objective != "lm" && o.objective != "distill" && o.objective != "mix")
    throw std::invalid_argument(fmt::format("--objective must be lm, distill or mix (got '{}')", o.objective));
  const bool distill = o.objective != "lm";
  std::vector<std::unique_ptr<KvCache>> caches;  // one per sequence of this rank
  for (int64_t i = 0; i < local; ++i) caches.push_back(make_lococo_cache(model.config(), training_cache, compressor));
  // The teachers of distillation: the same frozen model with every token kept.
  std::vector<std::unique_ptr<KvCache>> teachers;
  CacheOptions teacher_cache = o.cache;
  teacher_cache.policy = reference_policy();
  for (int64_t i = 0; distill && i < local; ++i) teachers.push_back(make_cache(model.config(), teacher_cache));

  std::mt19937_64 rng(o.seed);
  int64_t step = 0;
  double best = 1e30;
  const auto ckpt = state_file(o, ".ckpt");
  const nlohmann::json config = run_config(o);
  if (const auto state = resume_checkpoint(trainer, ckpt, o.resume, rng, config); !state.empty()) {
    step = state.at("step").get<int64_t>();
    best = state.value("best_val_ppl", 1e30);
    if (state.value("world_size", 1) != dist.world_size())
      throw std::invalid_argument(fmt::format("{}: written by {} ranks, resumed with {}", ckpt.string(),
                                              state.value("world_size", 1), dist.world_size()));
  }
  dist.expect_same(step, "the step to resume from");
  dist.broadcast(trainer.parameters());
  MetricsLog log;
  if (dist.is_main()) log = MetricsLog(state_file(o, ".metrics.jsonl"), /*append=*/step > 0);
  bool caller_stop = false;  // on_metrics asked to stop
  auto record = [&](const nlohmann::json& r) {
    log.write(r);
    if (o.on_metrics && !o.on_metrics(r)) caller_stop = true;
  };
  auto save = [&] {
    if (dist.is_main())
      trainer.save_checkpoint(ckpt, {{"step", step}, {"rng", rng_state(rng)}, {"best_val_ppl", best},
                                     {"world_size", dist.world_size()}, {"config", config}});
  };
  CompressorTrainResult r;
  if (o.handle_signals) install_stop_handler();
  Progress bar("train-compressor", o.steps, "step", !o.quiet && dist.is_main());
  bar.set(step);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t start = step;
  RecallNll recall;
  int64_t tokens = 0, accumulated = 0, last_eval = step;
  double loss_sum = 0;
  while (step < o.steps) {
    // The global batch: `sequences` windows of N chunks, the same on every
    // rank (same RNG); this rank trains on its slice, each through a fresh cache.
    std::vector<TrainingRow> windows;
    for (int64_t i = 0; i < o.sequences; ++i) {
      auto w = training_sequence(train, o.segments * B + 1, o, rng);  // [N B + 1]
      if (i >= seq_begin && i < seq_end) windows.push_back(std::move(w));
    }
    for (auto& c : caches) c->reset();
    for (auto& c : teachers) c->reset();
    bool sequence_trained = false;
    for (int64_t s = 0; s < o.segments && step < o.steps && !(caller_stop && accumulated == 0); ++s) {
      bool trained = false;
      double chunk_loss = 0;
      for (int64_t i = 0; i < local; ++i) {
        const auto chunk = windows[i].tokens.narrow(0, s * B, B);                        // [B]
        auto logits = model.forward(chunk, caches[i].get())[0];                          // [B, V]
        torch::Tensor loss;
        const auto targets = windows[i].tokens.narrow(0, s * B + 1, B);                 // [B]
        const auto weights = windows[i].weights.narrow(0, s * B, B);                     // [B]
        if (o.objective != "distill") loss = weighted_next_token_loss(logits, targets, weights);
        recall.add(logits, targets, windows[i].repeat.narrow(0, s * B, B));
        if (distill) {
          torch::Tensor teacher;
          {
            torch::NoGradGuard g;
            teacher = torch::log_softmax(model.forward(chunk, teachers[i].get())[0].to(torch::kFloat32), -1);  // [B, V]
          }
          auto kl = distillation_loss(teacher, logits);
          loss = loss.defined() ? loss + kl : kl;
        }
        tokens += B * dist.world_size();
        if (!loss.requires_grad()) continue;  // no compression has happened yet in this sequence
        if (!std::isfinite(loss.item<double>()))
          throw std::runtime_error(fmt::format("step {}: loss is NaN or Inf (last checkpoint: {})", step, ckpt.string()));
        // With BPTT the next chunks' losses run back through this chunk's graph too.
        (loss / static_cast<double>(o.grad_accum * local)).backward({}, /*retain_graph=*/o.bptt_chunks > 1);
        chunk_loss += loss.item<double>() / local;
        trained = true;
      }
      if (!trained) continue;
      sequence_trained = true;
      loss_sum += chunk_loss;
      if (++accumulated < o.grad_accum) continue;
      const double gnorm = trainer.step(step);
      for (auto& c : caches) c->detach_history();  // the history used the parameters before this step
      r.last_loss = dist.mean(loss_sum / accumulated);
      accumulated = 0;
      loss_sum = 0;
      ++step;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      r.tokens_per_second = tokens / std::max(secs, 1e-9);
      if (dist.is_main()) {
        nlohmann::json row = {{"step", step}, {"loss", r.last_loss}, {"lr", trainer.current_lr()}, {"grad_norm", gnorm},
                              {"tokens_per_second", r.tokens_per_second}, {"comm_seconds", dist.comm_seconds()}};
        if (recall.count > 0) row["recall_nll"] = recall.take();  // this rank's repeats since the last record
        record(row);
      }
      bar.set(step, fmt::format("loss {:.3f} {:.0f} tok/s", r.last_loss, r.tokens_per_second));
    }
    if (!sequence_trained && step < o.steps)  // would loop forever
      throw std::invalid_argument(fmt::format(
          "--segments {} x --chunk {} never fills the cache past budget {} + buffer {}, so nothing compresses "
          "and nothing trains: use more segments", o.segments, B, o.cache.budget, o.cache.buffer));
    r.steps_done = step;
    // Sequences end between steps: validate once a multiple of eval_every was crossed.
    const bool crossed = o.eval_every > 0 && step / o.eval_every > last_eval / o.eval_every;
    if (val && dist.is_main() && (crossed || step >= o.steps)) {
      last_eval = step;
      ValidationPpl v = validate(model, compressor, *val, o);
      r.validations.push_back(v);
      record({{"step", step}, {"val_ppl_lococo", v.lococo}, {"val_ppl_lococo_hh", v.lococo_hh},
              {"val_ppl_streaming", v.streaming}});
      if (v.lococo < best || o.keep == "last") {  // keep the best compressor, or every one
        best = std::min(best, v.lococo);
        compressor->save(o.out);
      }
    }
    dist.wait_for_main("waiting for rank 0's validation");
    // A stop waits for a step boundary: a checkpoint holds no partly accumulated gradient.
    const bool stop = dist.any(stop_requested() || caller_stop) ||
                      (o.stop_after > 0 && step - start >= o.stop_after && step < o.steps);
    if (stop && accumulated == 0) {
      save();
      r.interrupted = true;
      break;
    }
  }
  bar.finish();
  if (!r.interrupted) {
    save();
    if (!val && dist.is_main()) compressor->save(o.out);
  }
  return r;
}

}  // namespace lococo
