// lococo.perplexity and lococo.eval_passkey: the CLI's evaluations, results as dicts.
#include <fmt/format.h>
#include <pybind11/stl.h>
#include <torch/python.h>

#include "bindings.h"
#include "lococo/eval/eval.h"
#include "lococo/eval/perplexity.h"

namespace lococo::python {
namespace {

py::dict perplexity(const Model& m, const std::vector<int64_t>& ids, Cache& cache, bool return_nll) {
  if (ids.size() < 2) throw std::invalid_argument("perplexity: the text is too short (need at least 2 tokens)");
  PerplexityOptions po;
  po.chunk = cache.options.chunk;
  po.keep_nll = return_nll;
  PerplexityResult r;
  cache.tracked = false;  // a saved state could not say what it read
  {
    py::gil_scoped_release release;
    torch::NoGradGuard no_grad;
    r = streaming_perplexity(m.model(), *cache.cache, ids, po);
  }
  py::dict d;
  d["perplexity"] = r.perplexity();
  d["mean_nll"] = r.mean_nll();
  d["scored"] = r.scored;
  d["tokens"] = r.tokens;
  d["seconds"] = r.seconds;
  d["tokens_per_second"] = r.tokens_per_second();
  d["cache"] = cache.cache->describe();
  d["cache_bytes"] = cache.cache->bytes();
  if (return_nll) d["nll"] = r.nll;
  return d;
}

py::object passkey(const Model& m, const std::vector<std::string>& policies, int64_t budget, int64_t chunk,
                   const std::vector<int64_t>& lengths, const std::vector<double>& depths, int64_t trials,
                   uint64_t seed, const std::vector<std::string>& filler, bool full_beyond_context, bool progress,
                   const py::dict& cache_kw) {
  PasskeyEvalOptions o;
  o.policies = policies;
  o.budget = budget;
  o.lengths = lengths;
  o.depths = depths;
  o.trials = trials;
  o.seed = seed;
  o.filler = filler;
  o.full_beyond_context = full_beyond_context;
  o.progress = progress;
  // The options every policy shares (chunk, positions, per-policy knobs); each
  // run then takes its own policy and budget.
  o.cache = cache_options(m, reference_policy(), budget, chunk, cache_kw);
  for (const auto& p : policies) cache_policy(p);  // ValueError for an unknown one
  PasskeyReport report;
  {
    py::gil_scoped_release release;
    torch::NoGradGuard no_grad;
    try {
      report = eval_passkey(m.loaded, o);
    } catch (const std::invalid_argument&) {
      throw;
    } catch (const std::runtime_error& e) {  // a filler file that cannot be read
      throw FileError(e.what());
    }
  }
  return to_python(report.to_json());
}

}  // namespace

void bind_evaluate(py::module_& m) {
  m.def("_perplexity", &perplexity, py::arg("model"), py::arg("ids"), py::arg("cache"), py::arg("return_nll"));
  m.def("_eval_passkey", &passkey, py::arg("model"), py::arg("policies"), py::arg("budget"), py::arg("chunk"),
        py::arg("lengths"), py::arg("depths"), py::arg("trials"), py::arg("seed"), py::arg("filler"), py::arg("full_beyond_context"),
        py::arg("progress"), py::arg("cache_options"));
}

}  // namespace lococo::python
