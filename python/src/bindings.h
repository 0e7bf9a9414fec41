// The native half of the Python package `lococo` (python/lococo/__init__.py is
// the other): one bind_* per concept, each in its own file, and the few types
// they share. Tensors cross as torch.Tensor without copies (the module links
// the same libtorch as Debian's python3-torch); the GIL is released while the
// engine computes.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>
#include <pybind11/pybind11.h>

#include "lococo/generate/saved_state.h"
#include "lococo/kv/cache.h"
#include "lococo/model/model_dir.h"

namespace lococo::python {

namespace py = pybind11;

// A file that cannot be read as what it should be: raised as OSError.
struct FileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A loaded model as Python holds it.
struct Model {
  LoadedModel loaded;
  std::string fingerprint;  // model_fingerprint(), for saved states
  const LlamaModel& model() const { return *loaded.model; }
  const Tokenizer& tokenizer() const { return *loaded.tokenizer; }
};

// A per-sequence cache, the options it was made with (its chunk is the forward
// size that the policy's statistics assume), and what a saved state needs:
// the text read through forward() and the logits after it.
struct Cache {
  std::shared_ptr<KvCache> cache;
  CacheOptions options;
  Model model;
  torch::Tensor last_logits;  // [V] after the last token read, undefined before any
  std::string text;           // text_fingerprint() of the ids read
  int64_t tokens = 0;         // ids read
  bool tracked = true;        // false once generate() or perplexity() read through it (ids not followed)
  void forget() {             // a fresh sequence
    last_logits = torch::Tensor();
    text.clear();
    tokens = 0;
    tracked = true;
  }
};

// CacheOptions for `model` from a policy, budget, chunk and keyword options
// named as the CLI's flags with '_' for '-' (keep_rate, local_window, sinks, ...).
// ValueError naming an unknown keyword or a bad value. The compressor is left
// as given (resolve_compressor finds the model's own).
CacheOptions cache_options(const Model& model, const std::string& policy, int64_t budget, int64_t chunk,
                           const py::dict& options);

// nlohmann::json -> Python objects (dict, list, str, int, float, bool, None), and
// back (os.PathLike values as their str()); ValueError for other types.
py::object to_python(const nlohmann::json& j);
nlohmann::json to_json(py::handle value);

void bind_model(py::module_& m);     // model.cpp: load, Model, Tokenizer, forward, generate
void bind_cache(py::module_& m);     // cache.cpp: Cache, policies
void bind_evaluate(py::module_& m);  // evaluate.cpp: perplexity, passkey
void bind_train(py::module_& m);     // train.cpp: train_compressor

}  // namespace lococo::python
