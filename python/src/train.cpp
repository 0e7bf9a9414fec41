// lococo.train_compressor: the CLI's train-compressor, progress through a
// Python callback, Ctrl-C (KeyboardInterrupt) leaving a checkpoint.
#include <functional>
#include <map>

#include <fmt/format.h>
#include <pybind11/stl.h>
#include <torch/python.h>

#include "bindings.h"
#include "lococo/kv/registry.h"
#include "lococo/train/train_compressor.h"

namespace lococo::python {
namespace {

using Setter = std::function<void(CompressorTrainOptions&, py::handle)>;

template <typename T>
Setter set(T CompressorTrainOptions::*field) {
  return [field](CompressorTrainOptions& o, py::handle v) { o.*field = v.cast<T>(); };
}

template <typename Group, typename T>
Setter set(Group CompressorTrainOptions::*group, T Group::*field) {
  return [group, field](CompressorTrainOptions& o, py::handle v) { (o.*group).*field = v.cast<T>(); };
}

// Training options by their CLI names with '_' for '-'.
const std::map<std::string, Setter>& train_setters() {
  static const std::map<std::string, Setter> setters = {
      {"segments", set(&CompressorTrainOptions::segments)},
      {"grad_accum", set(&CompressorTrainOptions::grad_accum)},
      {"bptt_chunks", set(&CompressorTrainOptions::bptt_chunks)},
      {"objective", set(&CompressorTrainOptions::objective)},
      {"recall_rate", set(&CompressorTrainOptions::recall_rate)},
      {"recall_passage", set(&CompressorTrainOptions::recall_passage)},
      {"recall_shuffled", set(&CompressorTrainOptions::recall_shuffled)},
      {"recall_lead", set(&CompressorTrainOptions::recall_lead)},
      {"recall_weight", set(&CompressorTrainOptions::recall_weight)},
      {"recall_gap", set(&CompressorTrainOptions::recall_gap)},
      {"sequences", set(&CompressorTrainOptions::sequences)},
      {"memory_lr_scale", set(&CompressorTrainOptions::memory_lr_scale)},
      {"train_norms", set(&CompressorTrainOptions::train_norms)},
      {"norm_lr_scale", set(&CompressorTrainOptions::norm_lr_scale)},
      {"eval_every", set(&CompressorTrainOptions::eval_every)},
      {"val_tokens", set(&CompressorTrainOptions::val_tokens)},
      {"keep", set(&CompressorTrainOptions::keep)},
      {"seed", set(&CompressorTrainOptions::seed)},
      {"resume", set(&CompressorTrainOptions::resume)},
      {"stop_after", set(&CompressorTrainOptions::stop_after)},
      {"lr", set(&CompressorTrainOptions::optim, &OptimizerOptions::lr)},
      {"clip", set(&CompressorTrainOptions::optim, &OptimizerOptions::clip)},
      {"warmup", [](CompressorTrainOptions& o, py::handle v) { o.optim.schedule.warmup = v.cast<int64_t>(); }},
      {"schedule", [](CompressorTrainOptions& o, py::handle v) { o.optim.schedule.kind = v.cast<std::string>(); }},
      {"kernel", set(&CompressorTrainOptions::compressor, &CompressorOptions::kernel)},
      {"conv_layers", set(&CompressorTrainOptions::compressor, &CompressorOptions::conv_layers)},
      {"slot_features", set(&CompressorTrainOptions::compressor, &CompressorOptions::slot_features)},
      {"lambda_sigmoid", set(&CompressorTrainOptions::compressor, &CompressorOptions::lambda_sigmoid)},
      {"init_std", set(&CompressorTrainOptions::compressor, &CompressorOptions::init_std)},
      {"lambda_init", set(&CompressorTrainOptions::compressor, &CompressorOptions::lambda_init)},
  };
  return setters;
}

TokenData token_data(const std::vector<std::string>& paths, const Model& m, const std::filesystem::path& cache_dir) {
  try {
    return TokenData(paths, m.tokenizer(), cache_dir);
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw FileError(e.what());
  }
}

py::dict train(const Model& m, const std::vector<std::string>& data, const std::vector<std::string>& val,
               const std::string& out, int64_t budget, int64_t chunk, int64_t steps, bool progress,
               const py::object& callback, const py::dict& options) {
  CompressorTrainOptions o;
  o.steps = steps;
  o.out = out;
  o.quiet = !progress;
  o.handle_signals = false;  // Python keeps its own SIGINT handler: KeyboardInterrupt
  py::dict cache_kw;  // the rest: the cache's own options (they also shape inference), checked there
  for (const auto& [key, value] : options) {
    const auto name = py::str(key).cast<std::string>();
    const auto it = train_setters().find(name);
    if (it == train_setters().end()) {
      cache_kw[key] = value;
      continue;
    }
    try {
      it->second(o, value);
    } catch (const py::cast_error&) {
      throw std::invalid_argument(fmt::format("train_compressor option '{}': {} is not of the right type", name,
                                              py::repr(value).cast<std::string>()));
    }
  }
  o.cache = cache_options(m, trained_policy(), budget, chunk, cache_kw);
  const auto cache_dir = std::filesystem::path(out).parent_path() / "token-cache";
  TokenData train_data = token_data(data, m, cache_dir);
  std::optional<TokenData> val_data;
  if (!val.empty()) val_data.emplace(token_data(val, m, cache_dir));

  // Each metrics record goes to the callback; an exception there (Ctrl-C's
  // KeyboardInterrupt included) stops the run with a checkpoint, then is raised.
  std::optional<py::error_already_set> raised;
  o.on_metrics = [&](const nlohmann::json& record) {
    py::gil_scoped_acquire gil;
    try {
      if (!callback.is_none()) callback(to_python(record));
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    } catch (py::error_already_set& e) {
      raised.emplace(std::move(e));
      return false;
    }
    return true;
  };
  auto model = std::const_pointer_cast<LlamaModel>(m.loaded.model);  // frozen: only the compressor trains
  CompressorTrainResult r;
  {
    py::gil_scoped_release release;
    r = train_compressor(*model, train_data, val_data ? &*val_data : nullptr, o);
  }
  if (raised) throw std::move(*raised);
  py::dict d;
  d["steps_done"] = r.steps_done;
  d["last_loss"] = r.last_loss;
  d["tokens_per_second"] = r.tokens_per_second;
  d["interrupted"] = r.interrupted;
  py::list validations;
  for (const auto& v : r.validations) {
    py::dict row;
    row["lococo"] = v.lococo;
    row["lococo_hh"] = v.lococo_hh;
    row["streaming"] = v.streaming;
    validations.append(row);
  }
  d["validations"] = validations;
  d["out"] = out;
  return d;
}

}  // namespace

void bind_train(py::module_& m) {
  m.def("_train_compressor", &train, py::arg("model"), py::arg("data"), py::arg("val"), py::arg("out"),
        py::arg("budget"), py::arg("chunk"), py::arg("steps"), py::arg("progress"), py::arg("callback"),
        py::arg("options"));
}

}  // namespace lococo::python
