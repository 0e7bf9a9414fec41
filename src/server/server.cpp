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
using server_detail::logprobs;
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
  const int64_t started = static_cast<int64_t>(std::time(nullptr));  // /v1/models' "created"

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
    if (!options.cors_origin.empty())
      http.set_default_headers({{"Access-Control-Allow-Origin", options.cors_origin}, {"Vary", "Origin"}});
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
    if (status == 503) res.set_header("Retry-After", "1");
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
                {"data", {{{"id", options.model_name}, {"object", "model"}, {"created", started},
                           {"owned_by", "lococo"}}}}};
      res.set_content(to_text(j), "application/json");
    }));
    http.Post("/tokenize", endpoint("tokenize", true, [this](auto& q, auto& s) { tokenize(q, s); }));
    http.Post("/detokenize", endpoint("detokenize", true, [this](auto& q, auto& s) { detokenize(q, s); }));
    http.Get("/props", endpoint("props", true, [this](auto&, auto& res) {
      res.set_content(to_text(props()), "application/json");
    }));
    http.Get("/slots", endpoint("slots", true, [this](auto&, auto& res) {
      json slots = json::array();
      const auto busy = admission.busy_slots();
      for (size_t i = 0; i < busy.size(); ++i)
        slots.push_back({{"id", i}, {"is_processing", static_cast<bool>(busy[i])}, {"n_ctx", options.cache.budget}});
      res.set_content(to_text(slots), "application/json");
    }));
    if (!options.cors_origin.empty())  // browsers' preflight before a POST with JSON or a key
      http.Options(".*", [](const httplib::Request&, httplib::Response& res) {
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
        res.status = 204;
      });
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

  // llama.cpp's /tokenize: {"content", "add_special" (BOS; default false),
  // "with_pieces"} -> {"tokens": [id] or [{id, piece}]}.
  void tokenize(const httplib::Request& req, httplib::Response& res) {
    const json j = server_detail::parse_body(req.body);
    const std::string content = server_detail::get_string(j, "content");
    const bool add_special = server_detail::get_bool(j, "add_special", false);
    const bool with_pieces = server_detail::get_bool(j, "with_pieces", false);
    json tokens = json::array();
    for (const int64_t t : model.tokenizer->encode(content, add_special))
      tokens.push_back(with_pieces ? json{{"id", t}, {"piece", model.tokenizer->piece_text(t)}} : json(t));
    res.set_content(to_text({{"tokens", tokens}}), "application/json");
  }

  // llama.cpp's /detokenize: {"tokens": [id]} -> {"content"}.
  void detokenize(const httplib::Request& req, httplib::Response& res) {
    const json j = server_detail::parse_body(req.body);
    const auto ids = server_detail::get_token_ids(j, "tokens", model.tokenizer->vocab_size());
    res.set_content(to_text({{"content", model.tokenizer->decode(ids)}}), "application/json");
  }

  // llama.cpp's /props: the defaults a request gets, the slots, the template.
  json props() const {
    const auto& c = options.cache;
    return {{"default_generation_settings",
             {{"n_ctx", c.budget}, {"max_tokens", options.default_max_tokens}, {"temperature", 0.0},
              {"top_k", 0}, {"top_p", 1.0},
              {"cache", {{"policy", c.policy}, {"budget", c.budget}, {"chunk", c.chunk}}}}},
            {"total_slots", options.parallel},
            {"model_path", model.dir.string()},
            {"model_alias", options.model_name},
            {"chat_template", chat_tmpl.name}};
  }

  // One generation under a fresh cache of the request's policy. `on_text`
  // returning false (client gone) cancels; so does the request's deadline.
  GenerateResult run(const CompletionRequest& r, const GenerateOptions& gen, const std::vector<int64_t>& prompt,
                     std::chrono::steady_clock::time_point deadline, const TextCallback& on_text,
                     std::string* cache_desc, int64_t* cache_bytes) {
    auto cache = make_cache(model.model->config(), r.cache);
    const int64_t bytes = cache->bytes();
    metrics.add_cache_bytes(bytes);
    const auto t0 = std::chrono::steady_clock::now();
    bool timed_out = false;
    TextCallback guarded = [&](const std::string& piece) {
      if (std::chrono::steady_clock::now() > deadline) {
        timed_out = true;
        return false;
      }
      return on_text ? on_text(piece) : true;
    };
    GenerateResult g;
    try {
      g = generate(*model.model, *model.tokenizer, *cache, prompt, gen, guarded);
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

  // The options of choice i: its own random stream.
  static GenerateOptions choice_options(const CompletionRequest& r, int64_t i) {
    GenerateOptions gen = r.gen;
    gen.sampling.seed += static_cast<uint64_t>(i);
    return gen;
  }

  std::chrono::steady_clock::time_point deadline() const {
    return std::chrono::steady_clock::now() +
           std::chrono::duration_cast<std::chrono::steady_clock::duration>(
               std::chrono::duration<double>(options.timeout_seconds));
  }

  static json usage(int64_t prompt_tokens, int64_t completion_tokens) {
    return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}};
  }

  void complete(const httplib::Request& req, httplib::Response& res, bool chat) {
    auto r = std::make_shared<CompletionRequest>(
        server_detail::parse_completion_request(req.body, chat, options, chat_tmpl, model.dir.string()));
    auto prompt = std::make_shared<std::vector<int64_t>>(model.tokenizer->encode(r->prompt));
    if (static_cast<int64_t>(prompt->size()) > options.max_prompt_tokens)
      throw RequestError(400, fmt::format("prompt has {} tokens, more than the limit {}", prompt->size(),
                                          options.max_prompt_tokens));
    make_cache(model.model->config(), r->cache);  // invalid cache settings: 400 before queueing
    const int slot = admission.enter();
    if (slot < 0) throw RequestError(503, "server busy: all slots and the queue are full, retry later");
    auto ticket = std::make_shared<SlotTicket>(admission, slot);
    const std::string id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", next_id++);
    if (r->stream) return stream(res, r, prompt, ticket, id);
    std::string desc;
    int64_t bytes = 0, prompt_tokens = 0, completion_tokens = 0;
    const auto until = deadline();
    json choices = json::array();
    for (int64_t i = 0; i < r->n; ++i) {
      GenerateResult g = run(*r, choice_options(*r, i), *prompt, until, nullptr, &desc, &bytes);
      json c = choice(*r, i, g.text, finish_reason(g.finish_reason), false, true);
      if (r->gen.top_logprobs >= 0) c["logprobs"] = logprobs(*r, *model.tokenizer, g.logprobs);
      choices.push_back(std::move(c));
      prompt_tokens = g.prompt_tokens;
      completion_tokens += static_cast<int64_t>(g.tokens.size());
    }
    json j = reply_head(*r, options.model_name, id, false);
    j["choices"] = std::move(choices);
    j["usage"] = usage(prompt_tokens, completion_tokens);
    j["lococo"] = {{"cache", desc}, {"cache_bytes", bytes}};
    res.set_content(to_text(j), "application/json");
  }

  // Server-sent events: the generation runs inside the content provider, so a
  // failed write (client gone) cancels it and frees the slot. Choices stream
  // one after another; with logprobs, each chunk carries those of the tokens
  // sampled since the last chunk.
  void stream(httplib::Response& res, std::shared_ptr<CompletionRequest> r,
              std::shared_ptr<std::vector<int64_t>> prompt, std::shared_ptr<SlotTicket> ticket, std::string id) {
    res.set_header("Cache-Control", "no-cache");
    const auto until = deadline();
    res.set_chunked_content_provider("text/event-stream", [this, r, prompt, ticket, id, until](size_t,
                                                                                             httplib::DataSink& sink) {
      auto send = [&](const json& j) {
        const std::string event = "data: " + to_text(j) + "\n\n";
        return sink.write(event.data(), event.size());
      };
      std::vector<TokenLogprob> pending;  // sampled, not yet sent
      int64_t offset = 0;                 // completions: bytes of this choice's text sent
      auto chunk = [&](int64_t i, const std::string& text, const json& finish, bool first) {
        json j = reply_head(*r, options.model_name, id, true);
        json c = choice(*r, i, text, finish, true, first);
        if (r->gen.top_logprobs >= 0) {
          c["logprobs"] = logprobs(*r, *model.tokenizer, pending, offset);
          pending.clear();
        }
        offset += static_cast<int64_t>(text.size());
        j["choices"] = json::array({c});
        return j;
      };
      std::string desc;
      int64_t bytes = 0, prompt_tokens = 0, completion_tokens = 0;
      try {
        for (int64_t i = 0; i < r->n; ++i) {
          bool first = true;
          offset = 0;
          GenerateOptions gen = choice_options(*r, i);
          gen.on_logprob = [&](const TokenLogprob& t) { pending.push_back(t); };
          TextCallback on_text = [&](const std::string& piece) {
            const bool ok = send(chunk(i, piece, nullptr, first));
            first = false;
            return ok;
          };
          GenerateResult g = run(*r, gen, *prompt, until, on_text, &desc, &bytes);
          if (g.finish_reason == "cancelled") return false;
          json j = chunk(i, "", finish_reason(g.finish_reason), first);
          j["lococo"] = {{"cache", desc}, {"cache_bytes", bytes}};
          if (!send(j)) return false;
          prompt_tokens = g.prompt_tokens;
          completion_tokens += static_cast<int64_t>(g.tokens.size());
        }
        if (r->include_usage) {
          json j = reply_head(*r, options.model_name, id, true);
          j["choices"] = json::array();
          j["usage"] = usage(prompt_tokens, completion_tokens);
          if (!send(j)) return false;
        }
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
