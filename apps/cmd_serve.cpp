// lococo serve: the OpenAI-compatible HTTP server (include/lococo/server/server.h).
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "cli_common.h"
#include "lococo/core/io_util.h"
#include "commands.h"
#include "lococo/tokenizer/chat_template.h"
#include "lococo/server/server.h"

namespace lococo::cli {
namespace {

// SIGINT/SIGTERM only set a flag (any thread may take the signal); a watcher
// thread sees it and stops the server, whose running requests finish first.
// The watcher is joined before the server goes, so it never outlives it.
std::atomic<bool> g_stop_signal{false};
extern "C" void on_serve_stop_signal(int) { g_stop_signal = true; }

class StopOnSignals {
 public:
  explicit StopOnSignals(Server& server) {
    std::signal(SIGINT, on_serve_stop_signal);
    std::signal(SIGTERM, on_serve_stop_signal);
    watcher_ = std::thread([this, &server] {
      while (!g_stop_signal && !done_) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (done_) return;
      fmt::print(stderr, "lococo serve: stopping (running requests finish, queued ones get 503)\n");
      server.stop();
    });
  }
  ~StopOnSignals() {
    done_ = true;
    watcher_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread watcher_;
};

}  // namespace

void add_serve_command(CLI::App& root) {
  struct Flags {
    ModelFlags model;
    CacheFlags cache;
    ServerOptions server;
    std::string api_key_file;
  };
  auto f = std::make_shared<Flags>();
  auto* sub = root.add_subcommand("serve", "OpenAI-compatible HTTP server; every request gets a fixed-budget KV cache");
  add_model_flags(sub, f->model);
  auto& s = f->server;
  sub->add_option("--host", s.host, "Address to bind (loopback by default)")->capture_default_str();
  sub->add_option("--port", s.port, "Port (0 = any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  sub->add_option("--parallel", s.parallel, "Requests generating at once")->check(CLI::Range(1, 256))->capture_default_str();
  sub->add_option("--queue", s.queue, "Requests waiting for a slot; more get 503")
      ->check(CLI::Range(0, 4096))->capture_default_str();
  sub->add_option("--max-body", s.max_body_bytes, "Largest request body in bytes")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30))->capture_default_str();
  sub->add_option("--max-cache-bytes", s.max_cache_bytes,
                  "KV-cache bytes of the running requests and the slots' kept prompt states together; a request "
                  "that could never fit gets 400, one that must wait is queued (0: a quarter of the RAM)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 50))->capture_default_str();
  sub->add_option("--max-connections", s.max_connections, "Open connections; more are answered 503 and closed")
      ->check(CLI::Range(1, 900))->capture_default_str();  // httplib 0.11 refuses sockets past FD_SETSIZE (1024)
  sub->add_option("--header-timeout", s.header_timeout_seconds,
                  "Seconds a request's line and headers may take to arrive (then the connection closes)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--body-timeout", s.body_timeout_seconds, "Seconds a request body may take to arrive (408 after)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--max-prompt-tokens", s.max_prompt_tokens,
                  "Longest prompt in tokens, also the largest cache.budget (0: none under a bounded policy, "
                  "65536 under the full cache)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))->capture_default_str();
  sub->add_option("--slot-save-path", s.slot_save_path,
                  "Directory of slot files (POST /slots/{id}?action=save|restore) and named states "
                  "(\"cache\": {\"state\": NAME}); created if missing (default: none)");
  sub->add_option("--max-tokens-limit", s.max_tokens_limit, "Largest max_tokens a request may ask")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))->capture_default_str();
  sub->add_option("--default-max-tokens", s.default_max_tokens, "max_tokens when a request gives none")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))->capture_default_str();
  sub->add_option("--max-choices", s.max_choices, "Largest n (choices per request) a request may ask")
      ->check(CLI::Range(int64_t{1}, int64_t{128}))->capture_default_str();
  sub->add_option("--cors-origin", s.cors_origin,
                  "Send Access-Control-Allow-Origin with this value (e.g. '*' or https://app.example) and answer "
                  "browsers' OPTIONS preflight (default: no CORS headers)");
  sub->add_option("--timeout", s.timeout_seconds, "Seconds a request may run (all its choices)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sub->add_option("--api-key", s.api_key,
                  "Require this Bearer token (default: $LOCOCO_API_KEY, else none; visible in ps: prefer the "
                  "variable or --api-key-file)");
  sub->add_option("--api-key-file", f->api_key_file, "Read the Bearer token from this file (first line)");
  sub->add_flag("--metrics-open", s.metrics_open, "Serve /metrics without the API key");
  sub->add_option("--chat-template", s.chat_template, "Chat template (default: detected from the model, else plain)")
      ->check(CLI::IsMember(chat_template_names()));
  sub->add_option("--model-name", s.model_name, "Model id reported to clients")->capture_default_str();
  add_cache_flags(sub, f->cache);
  // Requests run side by side: each gets its share of the cores, otherwise
  // `parallel` OpenMP teams of `cores` threads fight over them. OpenBLAS and
  // OpenMP size their pools from the environment at load time, hence the
  // restart with it set (docs/DESIGN.md section 8).
  const auto prepare = [f] {
    if (f->model.threads != 0) return;
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    f->model.threads = std::max(1, cores / f->server.parallel);
    const std::string n = std::to_string(f->model.threads);
    request_env("OMP_NUM_THREADS", n);
    request_env("OPENBLAS_NUM_THREADS", n);
  };
  register_command(sub, [f] {
    LoadedModel m = load_model(f->model);
    ServerOptions o = f->server;
    o.cache = inference_cache_options(f->cache, m);
    if (!f->api_key_file.empty()) {
      if (!o.api_key.empty()) throw std::invalid_argument("--api-key and --api-key-file: give one");
      const std::string text = read_text_file(f->api_key_file);
      o.api_key = text.substr(0, text.find_first_of("\r\n"));
      if (o.api_key.empty()) throw std::invalid_argument("--api-key-file " + f->api_key_file + ": the file's first line is empty");
    }
    if (o.api_key.empty())
      if (const char* env = std::getenv("LOCOCO_API_KEY")) o.api_key = env;
    if (o.default_max_tokens > o.max_tokens_limit)
      throw std::invalid_argument("--default-max-tokens is larger than --max-tokens-limit");
    if (!o.slot_save_path.empty()) std::filesystem::create_directories(o.slot_save_path);
    Server server(m, o);
    const int port = server.bind();
    StopOnSignals stop_on_signals(server);
    fmt::print(stderr, "lococo serve: http://{}:{} (model {}, cache {} M={} B={}, {} slot(s), queue {})\n", o.host, port,
               m.dir.string(), o.cache.policy, o.cache.budget, o.cache.chunk, o.parallel, o.queue);
    server.listen();
    return 0;
  }, prepare);
}

}  // namespace lococo::cli
