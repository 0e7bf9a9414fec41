// lococo.Cache: a per-sequence KV cache of any policy, and the policy table.
#include <fmt/format.h>
#include <pybind11/stl/filesystem.h>
#include <torch/python.h>

#include "bindings.h"
#include "lococo/kv/far_attention.h"
#include "lococo/kv/registry.h"
#include "lococo/train/retention_targets.h"

namespace lococo::python {
namespace {

// The layer index checked: IndexError (pybind11 maps std::out_of_range).
int checked_layer(const Cache& c, int layer) {
  if (layer < 0 || layer >= c.cache->num_layers())
    throw std::out_of_range(fmt::format("layer {} out of range: the cache has {} layers", layer, c.cache->num_layers()));
  return layer;
}

// A cache of `model` with `options` (ready to use).
Cache build(const Model& model, const CacheOptions& options) {
  Cache c;
  c.model = model;
  c.options = options;
  try {
    c.cache = make_cache(model.model().config(), c.options);
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::runtime_error& e) {  // a compressor file that cannot be read
    throw FileError(e.what());
  }
  return c;
}

// Without a compressor file, lococo takes the model's own for this budget (and
// the file's split unless given); a file that cannot be read is an OSError.
CacheOptions resolved(const Model& model, const CacheOptions& options) {
  try {
    return resolve_compressor(options, model.loaded.dir);
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw FileError(e.what());
  }
}

Cache make(const Model& model, const std::string& policy, int64_t budget, int64_t chunk, const py::dict& options) {
  return build(model, resolved(model, cache_options(model, policy, budget, chunk, options)));
}

void save(const Cache& c, const std::filesystem::path& path) {
  if (!c.tracked)
    throw std::invalid_argument("save: generate() or perplexity() read through this cache, so what it read is not "
                                "known; save a cache that read its text with forward()");
  if (c.tokens == 0) throw std::invalid_argument("save: the cache has not read anything");
  py::gil_scoped_release release;
  save_state(path, *c.cache, c.options, c.model.fingerprint, c.text, c.tokens, c.last_logits);
}

// A cache continuing a saved state: the state's options, the model's own
// compressor for lococo unless `compressor` names one.
Cache load(const Model& model, const std::string& path, const std::string& compressor) {
  SavedState state;
  try {
    state = read_state(path);
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw FileError(e.what());
  }
  CacheOptions o = options_from_state(state.options, cache_options(model, reference_policy(), 1, 1, py::dict()));
  o.lococo.compressor = compressor;
  Cache c = build(model, resolved(model, o));
  c.last_logits = restore_state(state, *c.cache, c.options, model.fingerprint, model.model().config().vocab_size);
  c.text = state.text;
  c.tokens = state.tokens;
  return c;
}

}  // namespace

CacheOptions cache_options(const Model& model, const std::string& policy, int64_t budget, int64_t chunk,
                           const py::dict& options) {
  cache_policy(policy);  // ValueError listing the policies for an unknown name
  if (budget <= 0) throw std::invalid_argument(fmt::format("budget must be positive (got {})", budget));
  if (chunk <= 0) throw std::invalid_argument(fmt::format("chunk must be positive (got {})", chunk));
  CacheOptions o;
  o.policy = policy;
  o.budget = budget;
  o.chunk = chunk;
  o.positions = PositionMode::Cache;  // as the CLI: positions stay in the trained range for any length
  const auto& embed = model.model().weights().embed;
  o.dtype = at::promote_types(embed.scalar_type(), torch::kFloat32);  // fp32 slots for bf16/f16 weights too
  o.device = embed.device();
  o.lococo.keep_rate_from_file = o.lococo.local_window_from_file = true;  // unless given, as the CLI
  // The keywords by the CLI's names, one table for both (lococo/kv/registry.h).
  o = apply_cache_options_json(o, to_json(options));
  return o;
}

void bind_cache(py::module_& m) {
  py::class_<Cache>(m, "Cache", "A per-sequence KV cache (make one with Model.cache).")
      .def_property_readonly("policy", [](const Cache& c) { return c.options.policy; })
      .def_property_readonly("budget", [](const Cache& c) { return c.options.budget; })
      .def_property_readonly("chunk", [](const Cache& c) { return c.options.chunk; })
      .def_property_readonly("bounded", [](const Cache& c) { return is_bounded(c.options.policy); })
      .def_property_readonly("positions", [](const Cache& c) { return to_string(c.options.positions); })
      .def_property_readonly("num_layers", [](const Cache& c) { return c.cache->num_layers(); })
      .def_property_readonly("bytes", [](const Cache& c) { return c.cache->bytes(); },
                             "Bytes of key/value storage allocated now")
      .def_property_readonly("tokens_seen", [](const Cache& c) { return c.cache->tokens_seen(); })
      .def("slots", [](const Cache& c, int layer) { return c.cache->slots(checked_layer(c, layer)); },
           py::arg("layer"), "Slots stored now in `layer`")
      .def("keys", [](const Cache& c, int layer) { return c.cache->stored(checked_layer(c, layer)).keys; },
           py::arg("layer"),
           "The stored keys of `layer`, [kv_heads, slots, head_dim]: a view of the cache's memory, valid until "
           "the next forward (before RoPE under cache positions)")
      .def("values", [](const Cache& c, int layer) { return c.cache->stored(checked_layer(c, layer)).values; },
           py::arg("layer"), "The stored values of `layer`, [kv_heads, slots, head_dim] (a view, as keys())")
      .def("scores", [](const Cache& c, int layer) { return c.cache->stored_scores(checked_layer(c, layer)); },
           py::arg("layer"), "The policy's score of each slot of `layer`, [kv_heads, slots]")
      .def("positions_of", [](const Cache& c, int layer) { return c.cache->stored_positions(checked_layer(c, layer)); },
           py::arg("layer"), "The token index each slot of `layer` holds, [kv_heads, slots] (-1: a fused slot)")
      .def("reset", [](Cache& c) {
        c.cache->reset();
        c.forget();
      }, "Forget the sequence (keeps the buffers)")
      .def("save", &save, py::arg("path"),
           "Write the cache's state to `path` (read it back with Model.load_state): for a bounded policy a few "
           "megabytes at most, however long the text it read")
      .def("__repr__", [](const Cache& c) { return fmt::format("<lococo.Cache {}>", c.cache->describe()); });

  m.def("_load_state", &load, py::arg("model"), py::arg("path"), py::arg("compressor"));
  m.def("_far_attention_cache", [](const Model& model, int64_t chunk, int64_t far) {
    Cache c;
    c.model = model;
    c.options = cache_options(model, "full", 1, chunk, py::dict());
    c.cache = make_far_attention_cache(model.model().config(), c.options, far);
    return c;
  }, py::arg("model"), py::arg("chunk"), py::arg("far"),
        "A full cache whose scores() are the most attention each token got from one query >= far tokens later "
        "(the targets of learned retention); keys() are before RoPE");
  m.def("_retention_targets", [](const Model& model, const torch::Tensor& ids, const std::string& target, int64_t chunk,
                                 int64_t far, int64_t horizon, double share) {
    py::gil_scoped_release release;
    return retention_targets(model.model(), ids, chunk, parse_retention_target(target), far, horizon, share).targets;
  }, py::arg("model"), py::arg("ids"), py::arg("target"), py::arg("chunk"), py::arg("far"), py::arg("horizon"),
        py::arg("share") = 1e-4,
        "Per layer [kv_heads, n]: what learned retention is taught for these tokens (lococo/train/retention_targets.h)");
  m.def("_make_cache", &make, py::arg("model"), py::arg("policy"), py::arg("budget"), py::arg("chunk"),
        py::arg("options"));
  m.def("policies", [] {
    py::list out;
    for (const auto& p : cache_policies()) {
      py::dict row;
      row["name"] = p.name;
      row["summary"] = p.summary;
      row["bounded"] = p.bounded;
      row["needs_compressor"] = p.needs_compressor;
      out.append(row);
    }
    return out;
  }, "Every cache policy: name, summary, bounded (memory fixed by the budget), needs_compressor");
}

}  // namespace lococo::python
