#include "lococo/train/train.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "lococo/core/io_util.h"
#include "lococo/io/safetensors.h"

namespace lococo {

// ---- schedule ------------------------------------------------------------

double Schedule::factor(int64_t step) const {
  if (warmup > 0 && step < warmup) return static_cast<double>(step + 1) / warmup;
  if (kind == "constant") return 1.0;
  const double span = std::max<int64_t>(1, total - warmup);
  const double t = std::clamp((step - warmup) / span, 0.0, 1.0);
  if (kind == "linear") return 1.0 - (1.0 - min_ratio) * t;
  if (kind == "cosine") return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + std::cos(M_PI * t));
  throw std::invalid_argument("--schedule must be cosine, linear or constant (got '" + kind + "')");
}

// ---- parameter groups ------------------------------------------------------

std::vector<ParamGroup> split_decay(const std::string& name,
                                    const std::vector<std::pair<std::string, torch::Tensor>>& params,
                                    double lr_scale, double weight_decay) {
  ParamGroup decayed{name, {}, lr_scale, weight_decay};
  ParamGroup plain{name + "-no-decay", {}, lr_scale, 0.0};
  for (const auto& p : params) (p.second.dim() >= 2 ? decayed : plain).params.push_back(p);
  std::vector<ParamGroup> out;
  for (auto* g : {&decayed, &plain})
    if (!g->params.empty()) out.push_back(std::move(*g));
  return out;
}

// ---- trainer ---------------------------------------------------------------

Trainer::Trainer(std::vector<ParamGroup> groups, OptimizerOptions options)
    : groups_(std::move(groups)), options_(options) {
  std::vector<torch::optim::OptimizerParamGroup> torch_groups;
  for (const auto& g : groups_) {
    std::vector<torch::Tensor> ts;
    for (const auto& [n, t] : g.params) {
      if (!t.requires_grad()) throw std::invalid_argument("trainable tensor '" + n + "' does not require grad");
      ts.push_back(t);
    }
    auto opts = std::make_unique<torch::optim::AdamWOptions>(options.lr * g.lr_scale);
    opts->betas({options.beta1, options.beta2}).eps(options.eps).weight_decay(g.weight_decay);
    torch_groups.emplace_back(ts, std::move(opts));
  }
  if (torch_groups.empty()) throw std::invalid_argument("nothing to train: no trainable parameters");
  adam_ = std::make_unique<torch::optim::AdamW>(torch_groups, torch::optim::AdamWOptions(options.lr));
}

void Trainer::zero_grad() { adam_->zero_grad(); }

std::vector<torch::Tensor> Trainer::parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& g : groups_)
    for (const auto& [n, t] : g.params) out.push_back(t);
  return out;
}

double Trainer::step(int64_t step) {
  if (dist_) dist_->average_gradients(parameters());  // all of them, in the same order on every rank
  std::vector<torch::Tensor> all;
  for (const auto& g : groups_)
    for (const auto& [n, t] : g.params)
      if (t.grad().defined()) all.push_back(t);
  double norm = 0.0;
  if (!all.empty()) {
    norm = torch::nn::utils::clip_grad_norm_(all, options_.clip > 0 ? options_.clip : 1e30);
  }
  if (!std::isfinite(norm)) {
    for (const auto& g : groups_)
      for (const auto& [n, t] : g.params)
        if (t.grad().defined() && !torch::isfinite(t.grad()).all().item<bool>())
          throw std::runtime_error(fmt::format("step {}: gradient of '{}' is NaN or Inf", step, n));
    throw std::runtime_error(fmt::format("step {}: gradient norm is NaN or Inf", step));
  }
  lr_ = options_.lr * options_.schedule.factor(step);
  for (size_t i = 0; i < groups_.size(); ++i)
    static_cast<torch::optim::AdamWOptions&>(adam_->param_groups()[i].options()).lr(lr_ * groups_[i].lr_scale);
  adam_->step();
  adam_->zero_grad();
  return norm;
}

void Trainer::save_checkpoint(const std::filesystem::path& dir, const nlohmann::json& state) const {
  namespace fs = std::filesystem;
  const fs::path tmp = dir.string() + ".tmp";
  const fs::path old = dir.string() + ".old";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  NamedTensors tensors;
  for (const auto& g : groups_)
    for (const auto& [n, t] : g.params) tensors.emplace_back(n, t.detach());
  save_safetensors(tmp / "trainable.safetensors", tensors);
  {
    torch::serialize::OutputArchive archive;
    adam_->save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    write_text_atomic(tmp / "optimizer.pt", bytes.str());
  }
  write_text_atomic(tmp / "state.json", state.dump(2));
  // Swap in the new directory; the previous one survives until the swap is done
  // (a crash in between leaves `old`, which checkpoint_to_resume() takes).
  sync_path(tmp);
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  sync_path(dir.has_parent_path() ? dir.parent_path() : fs::path("."));
  fs::remove_all(old);
}

namespace {
bool complete_checkpoint(const std::filesystem::path& dir) {
  for (const char* f : {"trainable.safetensors", "optimizer.pt", "state.json"})
    if (!std::filesystem::exists(dir / f)) return false;
  return true;
}
}  // namespace

std::filesystem::path checkpoint_to_resume(const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir)) return dir;  // load_checkpoint names a missing file
  const std::filesystem::path old = dir.string() + ".old";
  if (complete_checkpoint(old)) {
    spdlog::warn("--resume: {} is missing; continuing from {} (a save was interrupted)", dir.string(), old.string());
    return old;
  }
  spdlog::warn("--resume: no checkpoint at {}; starting from step 0", dir.string());
  return {};
}

nlohmann::json Trainer::load_checkpoint(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  for (const char* f : {"trainable.safetensors", "optimizer.pt", "state.json"})
    if (!fs::exists(dir / f)) throw std::runtime_error((dir / f).string() + ": missing checkpoint file");
  SafetensorsFile file(dir / "trainable.safetensors");
  {
    torch::NoGradGuard g;
    for (auto& group : groups_)
      for (auto& [n, t] : group.params) {
        auto v = file.tensor(n);
        if (v.sizes() != t.sizes())
          throw std::runtime_error(fmt::format("{}: tensor '{}' has shape {} but the run expects {}",
                                               file.path().string(), n, fmt::join(v.sizes(), "x"),
                                               fmt::join(t.sizes(), "x")));
        t.copy_(v);
      }
  }
  try {
    torch::serialize::InputArchive archive;
    std::istringstream bytes(read_text_file(dir / "optimizer.pt"));
    archive.load_from(bytes);
    adam_->load(archive);
  } catch (const c10::Error& e) {
    throw std::runtime_error((dir / "optimizer.pt").string() + ": corrupt optimiser state (" +
                             e.what_without_backtrace() + ")");
  }
  return parse_json(read_text_file(dir / "state.json"), (dir / "state.json").string());
}

// ---- small helpers -----------------------------------------------------------

std::string rng_state(const std::mt19937_64& rng) {
  std::ostringstream s;
  s << rng;
  return s.str();
}

void set_rng_state(std::mt19937_64& rng, const std::string& state) {
  std::istringstream s(state);
  s >> rng;
  if (!s) throw std::runtime_error("checkpoint: corrupt RNG state");
}

MetricsLog::MetricsLog(const std::filesystem::path& file, bool append) {
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  out_.open(file, append ? std::ios::app : std::ios::trunc);
  if (!out_) throw std::runtime_error(file.string() + ": cannot open for writing");
}

void MetricsLog::write(const nlohmann::json& j) {
  if (out_.is_open()) out_ << j.dump() << "\n" << std::flush;
}

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop = true; }
}  // namespace

void install_stop_handler() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

bool stop_requested() { return g_stop; }

torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}));
}

void refuse_changed_config(const nlohmann::json& saved, const nlohmann::json& now, const std::filesystem::path& ckpt) {
  for (const auto& [flag, value] : saved.items())
    if (now.contains(flag) && now[flag] != value)
      throw std::invalid_argument(fmt::format("{}: --{} was {} when the checkpoint was written, {} now (a resumed "
                                              "run keeps its configuration)", ckpt.string(), flag, value.dump(),
                                              now[flag].dump()));
}

nlohmann::json resume_checkpoint(Trainer& trainer, const std::filesystem::path& ckpt, bool resume,
                                 std::mt19937_64& rng, const nlohmann::json& config) {
  const auto from = resume ? checkpoint_to_resume(ckpt) : std::filesystem::path();
  if (from.empty()) return nlohmann::json::object();
  auto state = trainer.load_checkpoint(from);
  if (!config.is_null()) refuse_changed_config(state.value("config", nlohmann::json::object()), config, from);
  set_rng_state(rng, state.at("rng").get<std::string>());
  return state;
}

}  // namespace lococo
