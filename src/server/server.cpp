#include "lococo/server/server.h"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <strings.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "lococo/core/io_util.h"
#include "lococo/tokenizer/chat_template.h"
#include "lococo/generate/generate.h"
#include "server/admission.h"
#include "server/metrics.h"
#include "server/openai_reply.h"
#include "server/request.h"

namespace lococo {
namespace {

using nlohmann::json;
using server_detail::Admission;
using server_detail::CompletionRequest;
using server_detail::Metrics;
using server_detail::RequestError;
using server_detail::SlotTicket;
using server_detail::choice;
using server_detail::error_body;
using server_detail::finish_reason;
using server_detail::reply_head;

// Generated text can hold invalid UTF-8 (byte-fallback pieces of a random or
// undertrained model): replace it instead of failing the reply.
std::string to_text(const json& j) { return to_json_line(j); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Constant-time comparison, so the key cannot be guessed byte by byte from timing.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) diff |= static_cast<unsigned char>(a[i % std::max<size_t>(a.size(), 1)] ^ b[i]);
  return diff == 0 && !a.empty();
}

}  // namespace

// ---- The server --------------------------------------------------------------------
struct Server::Impl {
  LoadedModel model;
  ServerOptions options;
  ChatTemplate chat_tmpl;
  httplib::Server http;
  Admission admission;
  Metrics metrics;
  std::atomic<uint64_t> internal_errors_{0};
  std::atomic<uint64_t> next_id{1};
  enum State { kIdle, kServing, kDone };
  std::atomic<int> state{kIdle};
  std::atomic<bool> stop_flag{false};
  int port = 0;
  socket_t listen_socket = -1;  // the last socket httplib made for bind()

  Impl(LoadedModel m, ServerOptions o)
      : model(std::move(m)),
        options(std::move(o)),
        chat_tmpl(chat_template(options.chat_template.empty() ? detect_chat_template(model.dir) : options.chat_template)),
        admission(options.parallel, options.queue) {
    // cpp-httplib writes with plain send(): a client that hung up would raise
    // SIGPIPE and kill the process. Ignoring it turns that into a failed write.
    std::signal(SIGPIPE, SIG_IGN);
    if (options.parallel < 1) throw std::invalid_argument("--parallel must be at least 1");
    if (options.queue < 0) throw std::invalid_argument("--queue must be >= 0");
    make_cache(model.model->config(), options.cache);  // the defaults must be valid before serving
    const int threads = options.parallel + options.queue + 4;  // + health, metrics, refusals
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    http.set_payload_max_length(options.max_body_bytes);
    http.set_read_timeout(30, 0);
    http.set_socket_options([this](socket_t sock) {
      httplib::default_socket_options(sock);
      listen_socket = sock;
    });
    routes();
  }

  // An engine failure: logged whole under a request id; the client, who may be
  // anyone, gets the id only (libtorch messages carry paths and backtraces).
  std::string internal_error(const std::exception& e) {
    const uint64_t id = ++internal_errors_;
    spdlog::error("request error {}: {}", id, e.what());
    return fmt::format("internal error (id {}; the server log has the details)", id);
  }

  void reply_error(httplib::Response& res, int status, const std::string& message) {
    res.status = status;
    res.set_content(to_text(error_body(status, message)), "application/json");
  }

  bool authorised(const httplib::Request& req, httplib::Response& res) {
    if (options.api_key.empty()) return true;
    const std::string h = req.get_header_value("Authorization");
    // The scheme is case-insensitive (RFC 7235); the token is not.
    const bool bearer = h.size() > 7 && strncasecmp(h.c_str(), "Bearer ", 7) == 0;
    if (bearer && same_secret(options.api_key, h.substr(7))) return true;
    reply_error(res, 401, "missing or wrong API key (Authorization: Bearer <key>)");
    return false;
  }

  // Wraps a handler: auth, request/error counting, exceptions to JSON errors.
  httplib::Server::Handler endpoint(const std::string& name, bool needs_key,
                                    std::function<void(const httplib::Request&, httplib::Response&)> body) {
    return [this, name, needs_key, body](const httplib::Request& req, httplib::Response& res) {
      try {
        if (!needs_key || authorised(req, res)) body(req, res);
      } catch (const RequestError& e) {
        reply_error(res, e.status, e.what());
      } catch (const std::invalid_argument& e) {
        reply_error(res, 400, e.what());
      } catch (const std::exception& e) {
        reply_error(res, 500, internal_error(e));
      }
      metrics.count_request(name, res.status == -1 ? 200 : res.status);  // -1: httplib's "200 unless set"
    };
  }

  void routes() {
    http.Post("/v1/completions", endpoint("completions", true, [this](auto& q, auto& s) { complete(q, s, false); }));
    http.Post("/v1/chat/completions", endpoint("chat", true, [this](auto& q, auto& s) { complete(q, s, true); }));
    http.Get("/v1/models", endpoint("models", true, [this](auto&, auto& res) {
      json j = {{"object", "list"},
                {"data", {{{"id", options.model_name}, {"object", "model"}, {"owned_by", "lococo"}}}}};
      res.set_content(to_text(j), "application/json");
    }));
    http.Get("/health", endpoint("health", false, [this](auto&, auto& res) {
      const auto [busy, waiting] = admission.busy_and_waiting();
      res.set_content(to_text({{"status", "ok"}, {"slots_busy", busy}, {"queued", waiting}}), "application/json");
    }));
    http.Get("/metrics", endpoint("metrics", !options.metrics_open, [this](auto&, auto& res) {
      const auto [busy, waiting] = admission.busy_and_waiting();
      res.set_content(metrics.render(busy, waiting), "text/plain; version=0.0.4");
    }));
    http.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (res.body.empty()) {
        const int status = res.status;
        reply_error(res, status, status == 404 ? "no such endpoint" : status == 413 ? "request body too large"
                                                                                   : "request failed");
      }
    });
  }

  // One generation under a fresh cache of the request's policy. `on_text`
  // returning false (client gone) cancels; so does the server's timeout.
  GenerateResult run(const CompletionRequest& r, const std::vector<int64_t>& prompt, const TextCallback& on_text,
                     std::string* cache_desc, int64_t* cache_bytes) {
    auto cache = make_cache(model.model->config(), r.cache);
    const int64_t bytes = cache->bytes();
    metrics.add_cache_bytes(bytes);
    const auto t0 = std::chrono::steady_clock::now();
    bool timed_out = false;
    TextCallback guarded = [&](const std::string& piece) {
      if (seconds_since(t0) > options.timeout_seconds) {
        timed_out = true;
        return false;
      }
      return on_text ? on_text(piece) : true;
    };
    GenerateResult g;
    try {
      g = generate(*model.model, *model.tokenizer, *cache, prompt, r.gen, guarded);
    } catch (...) {
      metrics.add_cache_bytes(-bytes);
      throw;
    }
    if (timed_out) g.finish_reason = "timeout";
    *cache_desc = cache->describe();
    *cache_bytes = std::max(bytes, cache->bytes());
    metrics.add_cache_bytes(-bytes);
    metrics.count_generation(g.prompt_tokens, static_cast<int64_t>(g.tokens.size()), seconds_since(t0));
    return g;
  }

  void complete(const httplib::Request& req, httplib::Response& res, bool chat) {
    auto r = std::make_shared<CompletionRequest>(
        server_detail::parse_completion_request(req.body, chat, options, chat_tmpl, model.dir.string()));
    auto prompt = std::make_shared<std::vector<int64_t>>(model.tokenizer->encode(r->prompt));
    if (static_cast<int64_t>(prompt->size()) > options.max_prompt_tokens)
      throw RequestError(400, fmt::format("prompt has {} tokens, more than the limit {}", prompt->size(),
                                          options.max_prompt_tokens));
    make_cache(model.model->config(), r->cache);  // invalid cache settings: 400 before queueing
    if (!admission.enter()) throw RequestError(503, "server busy: all slots and the queue are full, retry later");
    auto ticket = std::make_shared<SlotTicket>(admission);
    const std::string id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", next_id++);
    if (r->stream) return stream(res, r, prompt, ticket, id);
    std::string desc;
    int64_t bytes = 0;
    GenerateResult g = run(*r, *prompt, nullptr, &desc, &bytes);
    json j = reply_head(*r, options.model_name, id, false);
    j["choices"] = json::array({choice(*r, g.text, finish_reason(g.finish_reason), false, true)});
    j["usage"] = {{"prompt_tokens", g.prompt_tokens},
                  {"completion_tokens", g.tokens.size()},
                  {"total_tokens", g.prompt_tokens + static_cast<int64_t>(g.tokens.size())}};
    j["lococo"] = {{"cache", desc}, {"cache_bytes", bytes}};
    res.set_content(to_text(j), "application/json");
  }

  // Server-sent events: the generation runs inside the content provider, so a
  // failed write (client gone) cancels it and frees the slot.
  void stream(httplib::Response& res, std::shared_ptr<CompletionRequest> r,
              std::shared_ptr<std::vector<int64_t>> prompt, std::shared_ptr<SlotTicket> ticket, std::string id) {
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [this, r, prompt, ticket, id](size_t, httplib::DataSink& sink) {
      auto send = [&](const json& j) {
        const std::string event = "data: " + to_text(j) + "\n\n";
        return sink.write(event.data(), event.size());
      };
      bool first = true;
      TextCallback on_text = [&](const std::string& piece) {
        json j = reply_head(*r, options.model_name, id, true);
        j["choices"] = json::array({choice(*r, piece, nullptr, true, first)});
        first = false;
        return send(j);
      };
      std::string desc;
      int64_t bytes = 0;
      try {
        GenerateResult g = run(*r, *prompt, on_text, &desc, &bytes);
        if (g.finish_reason == "cancelled") return false;
        json j = reply_head(*r, options.model_name, id, true);
        j["choices"] = json::array({choice(*r, "", finish_reason(g.finish_reason), true, first)});
        j["lococo"] = {{"cache", desc}, {"cache_bytes", bytes}};
        if (!send(j)) return false;
      } catch (const std::exception& e) {
        send(error_body(500, internal_error(e)));
      }
      const std::string done = "data: [DONE]\n\n";
      sink.write(done.data(), done.size());
      sink.done();
      return true;
    });
  }
};

Server::Server(LoadedModel model, ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(options))) {}
Server::~Server() = default;

int Server::bind() {
  auto& o = impl_->options;
  impl_->port = o.port == 0 ? impl_->http.bind_to_any_port(o.host) : (impl_->http.bind_to_port(o.host, o.port) ? o.port : -1);
  if (impl_->port < 0) throw std::runtime_error(fmt::format("cannot listen on {}:{}", o.host, o.port));
  // Debian's compiled cpp-httplib listens with a backlog of 5: a burst of
  // connections overflows it, and the kernel's SYN-cookie fallback then resets
  // some of them (clients saw "Read" errors with 50 at once). Calling listen()
  // again on a listening socket only raises its backlog.
  if (::listen(impl_->listen_socket, SOMAXCONN) != 0)
    throw std::runtime_error(fmt::format("cannot raise the listen backlog on {}:{}", o.host, impl_->port));
  return impl_->port;
}

// Stopping must work whenever it comes: before the serving loop starts (it
// then never starts) or while accept() waits. httplib's stop() alone misses
// the first case, and an accept() already blocked was seen to stay blocked
// (cpp-httplib 0.11), so stop() also connects once to wake it, until the
// loop has ended. `state` is set before `stop_flag` is read and vice versa,
// so one side always sees the other.
void Server::listen() {
  impl_->state = Impl::kServing;
  if (!impl_->stop_flag) impl_->http.listen_after_bind();
  impl_->state = Impl::kDone;
}

void Server::stop() {
  impl_->stop_flag = true;
  for (int i = 0; i < 500 && impl_->state == Impl::kServing; ++i) {
    impl_->http.stop();
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(impl_->port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0) {
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      ::close(fd);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int Server::port() const { return impl_->port; }

}  // namespace lococo
