// The extension module lococo._lococo: error mapping and the bind_* of each concept.
#include <fmt/format.h>
#include <torch/python.h>

#include "bindings.h"

namespace lococo::python {

py::object to_python(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return py::none();
    case nlohmann::json::value_t::boolean: return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return py::int_(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return py::int_(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float: return py::float_(j.get<double>());
    case nlohmann::json::value_t::string: return py::str(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      py::list out;
      for (const auto& v : j) out.append(to_python(v));
      return std::move(out);
    }
    case nlohmann::json::value_t::object: {
      py::dict out;
      for (const auto& [k, v] : j.items()) out[py::str(k)] = to_python(v);
      return std::move(out);
    }
    default: return py::none();  // binary and discarded values never occur in reports
  }
}

nlohmann::json to_json(py::handle v) {
  if (v.is_none()) return nullptr;
  if (py::isinstance<py::bool_>(v)) return v.cast<bool>();  // before int: bool is an int in Python
  if (py::isinstance<py::int_>(v)) return v.cast<int64_t>();
  if (py::isinstance<py::float_>(v)) return v.cast<double>();
  if (py::isinstance<py::str>(v)) return v.cast<std::string>();
  if (py::hasattr(v, "__fspath__")) return py::str(v).cast<std::string>();
  if (py::isinstance<py::dict>(v)) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, value] : v.cast<py::dict>()) out[py::str(key).cast<std::string>()] = to_json(value);
    return out;
  }
  if (py::isinstance<py::list>(v) || py::isinstance<py::tuple>(v)) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& item : v) out.push_back(to_json(item));
    return out;
  }
  throw std::invalid_argument(fmt::format("{} cannot be an option value", py::repr(v).cast<std::string>()));
}

}  // namespace lococo::python

PYBIND11_MODULE(_lococo, m) {
  namespace py = pybind11;
  using namespace lococo::python;
  m.doc() = "Native part of lococo: long-context language models in fixed memory (see the lococo package).";
  // std::invalid_argument (a caller's mistake) is ValueError by pybind11's own
  // mapping, std::runtime_error RuntimeError; files that cannot be read: OSError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const FileError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });
  bind_model(m);
  bind_cache(m);
  bind_evaluate(m);
  bind_train(m);
  // The address of a tensor's data as the engine sees it: tests check that
  // tensors cross the boundary without copies.
  m.def("_data_ptr", [](const torch::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()); });
}
