// lococo.Model and lococo.Tokenizer: loading, forward, generation (whole or streamed).
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <pybind11/stl.h>
#include <torch/python.h>

#include "bindings.h"
#include "lococo/generate/generate.h"
#include "lococo/tokenizer/chat_template.h"

namespace lococo::python {
namespace {

Model load(const std::string& path, const std::string& dtype) {
  const std::filesystem::path p = path.empty() ? default_model_dir() : std::filesystem::path(path);
  if (!std::filesystem::exists(p)) throw FileError(fmt::format("{}: no such file or directory", p.string()));
  ModelOptions options;
  options.dtype = parse_dtype(dtype, "dtype");  // ValueError naming it
  try {
    Model m{load_model_dir(p, options), ""};
    m.fingerprint = model_fingerprint(m.model(), m.tokenizer());
    return m;
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw FileError(e.what());
  }
}

// Token ids from a list of ints or a 1-D int64 tensor (used in place, no copy).
torch::Tensor token_tensor(const py::object& ids) {
  if (THPVariable_Check(ids.ptr())) {
    auto t = THPVariable_Unpack(ids.ptr());
    if (t.scalar_type() != torch::kInt64 || t.dim() != 1)
      throw std::invalid_argument(fmt::format("ids: a 1-D int64 tensor expected (got {} of {} dims)",
                                              c10::toString(t.scalar_type()), t.dim()));
    return t;
  }
  return torch::tensor(ids.cast<std::vector<int64_t>>(), torch::kInt64);
}

void check_ids(const Model& m, const torch::Tensor& ids) {
  if (ids.numel() == 0) throw std::invalid_argument("ids: empty");
  const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= m.model().config().vocab_size)
    throw std::invalid_argument(
        fmt::format("ids: token {} is outside the vocabulary [0, {})", lo < 0 ? lo : hi, m.model().config().vocab_size));
}

// Logits [T, V] of `ids` continuing `cache` (or a fresh causal pass without
// one). The cache reads the ids in chunks of its own chunk size, as the CLI
// does; a single chunk's logits are the engine's tensor itself.
torch::Tensor forward(const Model& m, const py::object& ids_obj, Cache* cache) {
  const auto ids = token_tensor(ids_obj);
  check_ids(m, ids);
  py::gil_scoped_release release;
  torch::NoGradGuard no_grad;
  if (!cache) return m.model().forward(ids, nullptr)[0];
  const int64_t T = ids.size(0), B = cache->options.chunk;
  std::vector<torch::Tensor> parts;
  for (int64_t at = 0; at < T; at += B)
    parts.push_back(m.model().forward(ids.narrow(0, at, std::min(B, T - at)), cache->cache.get())[0]);  // [b, V]
  // What a saved state of this cache records.
  const auto contiguous = ids.contiguous();
  const int64_t* p = contiguous.data_ptr<int64_t>();
  cache->text = text_fingerprint(std::vector<int64_t>(p, p + T), cache->text);
  cache->tokens += T;
  cache->last_logits = parts.back()[-1];
  return parts.size() == 1 ? parts[0] : torch::cat(parts);
}

// Generates after `ids`: a fresh prompt through generate(), or with no ids the
// continuation of what the cache has read (its last logits).
GenerateResult run_generation(const Model& m, Cache& cache, const std::vector<int64_t>& ids, const GenerateOptions& o,
                              const TextCallback& on_text) {
  torch::NoGradGuard no_grad;
  if (ids.empty()) {
    if (!cache.last_logits.defined() || !cache.tracked)
      throw std::invalid_argument("prompt: empty, and the cache has not read anything to continue from");
    return continue_generation(m.model(), m.tokenizer(), *cache.cache, cache.last_logits, o, on_text);
  }
  return generate(m.model(), m.tokenizer(), *cache.cache, ids, o, on_text);
}

py::dict result_dict(const GenerateResult& r) {
  py::dict d;
  d["text"] = r.text;
  d["tokens"] = r.tokens;
  d["finish_reason"] = r.finish_reason;
  d["prompt_tokens"] = r.prompt_tokens;
  d["prefill_seconds"] = r.prefill_seconds;
  d["decode_seconds"] = r.decode_seconds;
  return d;
}

// A generation running on its own thread, handing out its text pieces as the
// engine emits them; Python iterates it. Dropping it cancels the generation.
class TextStream {
 public:
  TextStream(Model model, Cache cache, std::vector<int64_t> prompt, GenerateOptions options)
      : model_(std::move(model)), cache_(std::move(cache)) {
    worker_ = std::thread([this, prompt = std::move(prompt), options] { run(prompt, options); });
  }
  ~TextStream() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancel_ = true;
    }
    worker_.join();
  }
  TextStream(const TextStream&) = delete;
  TextStream& operator=(const TextStream&) = delete;

  std::string next() {
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    {
      py::gil_scoped_release release;
      lock.lock();
      ready_.wait(lock, [this] { return !pieces_.empty() || done_; });
    }
    if (!pieces_.empty()) {
      std::string piece = std::move(pieces_.front());
      pieces_.pop_front();
      return piece;
    }
    if (error_) std::rethrow_exception(error_);
    throw py::stop_iteration();
  }

  // The whole result once the stream is exhausted; None before.
  py::object result() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!done_ || error_) return py::none();
    return result_dict(result_);
  }

 private:
  void run(const std::vector<int64_t>& prompt, const GenerateOptions& options) {
    GenerateResult r;
    std::exception_ptr error;
    try {
      r = run_generation(model_, cache_, prompt, options, [this](const std::string& p) {
        std::lock_guard<std::mutex> lock(mu_);
        pieces_.push_back(p);
        ready_.notify_one();
        return !cancel_;
      });
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu_);
    result_ = std::move(r);
    error_ = error;
    done_ = true;
    ready_.notify_one();
  }

  Model model_;
  Cache cache_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::string> pieces_;
  bool done_ = false, cancel_ = false;
  std::exception_ptr error_;
  GenerateResult result_;
  std::thread worker_;
};

std::vector<int64_t> prompt_ids(const Model& m, const py::object& prompt) {
  if (py::isinstance<py::str>(prompt)) return m.tokenizer().encode(prompt.cast<std::string>(), /*add_bos=*/false);
  return prompt.cast<std::vector<int64_t>>();
}

py::object generate_text(const Model& m, const py::object& prompt, Cache& cache, const GenerateOptions& base,
                         bool stream) {
  auto ids = prompt_ids(m, prompt);
  GenerateOptions o = base;
  o.chunk = cache.options.chunk;
  if (o.max_tokens < 0) throw std::invalid_argument(fmt::format("max_tokens must not be negative (got {})", o.max_tokens));
  if (ids.empty() && (!cache.last_logits.defined() || !cache.tracked))
    throw std::invalid_argument("prompt: empty, and the cache has not read anything to continue from");
  // The generated tokens are read through the cache without being followed here.
  Cache reading = cache;
  cache.tracked = false;
  if (stream) return py::cast(std::make_unique<TextStream>(m, reading, std::move(ids), o));
  GenerateResult r;
  {
    py::gil_scoped_release release;
    r = run_generation(m, reading, ids, o, nullptr);
  }
  return result_dict(r);
}

}  // namespace

void bind_model(py::module_& m) {
  py::class_<Tokenizer, std::shared_ptr<Tokenizer>>(m, "Tokenizer", "The model's tokenizer")
      .def("encode", &Tokenizer::encode, py::arg("text"), py::arg("add_bos") = false, "Text -> token ids")
      .def("decode", &Tokenizer::decode, py::arg("ids"), "Token ids -> text")
      .def("piece", &Tokenizer::piece_text, py::arg("id"), "The text of one token")
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("bos_id", &Tokenizer::bos_id)
      .def_property_readonly("eos_id", &Tokenizer::eos_id);

  py::class_<Model>(m, "Model", "A loaded model (make one with lococo.load)")
      .def_property_readonly("path", [](const Model& x) { return x.loaded.dir.string(); })
      .def_property_readonly("format", [](const Model& x) { return x.loaded.format; })
      .def_property_readonly("dtype", [](const Model& x) { return dtype_name(x.model().weights().embed.scalar_type()); })
      .def_property_readonly("config", [](const Model& x) { return to_python(x.model().config().to_json()); },
                             "The model's config.json as a dict")
      .def_property_readonly("tokenizer", [](const Model& x) { return std::const_pointer_cast<Tokenizer>(x.loaded.tokenizer); })
      .def_property_readonly("chat_template", [](const Model& x) { return detect_chat_template(x.loaded.dir); },
                             "The name of the model's chat template")
      .def("render_chat", [](const Model& x, const std::vector<std::map<std::string, std::string>>& messages) {
        std::vector<ChatMessage> chat;
        for (const auto& msg : messages) {
          const auto role = msg.find("role"), content = msg.find("content");
          if (role == msg.end() || content == msg.end())
            throw std::invalid_argument("messages: each needs 'role' and 'content'");
          chat.push_back({role->second, content->second});
        }
        return render_chat(chat_template(detect_chat_template(x.loaded.dir)), chat);
      }, py::arg("messages"), "A prompt from [{'role': ..., 'content': ...}] in the model's chat template")
      .def("__repr__", [](const Model& x) {
        return fmt::format("<lococo.Model {} ({}, {})>", x.loaded.dir.string(), x.loaded.format,
                           dtype_name(x.model().weights().embed.scalar_type()));
      });

  m.def("_load", &load, py::arg("path"), py::arg("dtype"));
  m.def("default_model_path", [] { return default_model_dir().string(); }, "Where the bundled model is");
  m.def("_forward", &forward, py::arg("model"), py::arg("ids"), py::arg("cache").none(true));

  py::class_<TextStream>(m, "TextStream", "Text pieces of a generation, as they come")
      .def("__iter__", [](TextStream& s) -> TextStream& { return s; })
      .def("__next__", &TextStream::next)
      .def_property_readonly("result", &TextStream::result, "The whole result (a dict) once exhausted, else None");

  m.def("_generate", [](const Model& model, const py::object& prompt, Cache& cache, int64_t max_tokens,
                        double temperature, int64_t top_k, double top_p, uint64_t seed,
                        const std::vector<std::string>& stop, bool add_bos, bool stop_at_eos, bool stream) {
    GenerateOptions o;
    o.max_tokens = max_tokens;
    o.sampling.temperature = temperature;
    o.sampling.top_k = top_k;
    o.sampling.top_p = top_p;
    o.sampling.seed = seed;
    o.stop = stop;
    o.add_bos = add_bos;
    o.stop_at_eos = stop_at_eos;
    return generate_text(model, prompt, cache, o, stream);
  });
}

}  // namespace lococo::python
