#include "lococo/server/server.h"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <limits>
#include <cerrno>
#include <cstdlib>
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
#include "lococo/generate/saved_state.h"
#include "lococo/kv/registry.h"
#include "server/admission.h"
#include "server/http_connection.h"
#include "server/metrics.h"
#include "server/openai_reply.h"
#include "server/piece_token_cache.h"
#include "server/prompt_cache.h"
#include "server/request.h"

namespace lococo {
namespace {

using nlohmann::json;
using server_detail::Admission;
using server_detail::CompletionRequest;
using server_detail::Connection;
using server_detail::Metrics;
using server_detail::PieceTokenCache;
using server_detail::PromptCache;
using server_detail::PromptState;
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

// --max-cache-bytes 0: a quarter of the machine's memory.
int64_t resolved_max_cache_bytes(const ServerOptions& o) {
  if (o.max_cache_bytes > 0) return o.max_cache_bytes;
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page / 4 : int64_t{4} << 30;
}

server_detail::ConnectionLimits connection_limits(const ServerOptions& o) {
  server_detail::ConnectionLimits l;
  l.max_connections = o.max_connections;
  l.header_seconds = o.header_timeout_seconds;
  l.body_seconds = o.body_timeout_seconds;
  return l;
}

}  // namespace

// ---- The server --------------------------------------------------------------------
constexpr int64_t kPieceTokenCapacity = 4 << 20;  // ids of recent prompts' pieces (32 MiB): a few books

struct Server::Impl {
  LoadedModel model;
  ServerOptions options;
  ChatTemplate chat_tmpl;
  server_detail::GuardedHttpServer http;
  PromptCache prompts;
  Admission admission;
  PieceTokenCache piece_tokens;  // long prompts' ids by piece: a book sent again is not tokenised again
  const std::string model_fp;  // model_fingerprint(): states of other models are refused
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
        http(connection_limits(options)),
        prompts(options.parallel, options.slot_save_path),
        admission(options.parallel, options.queue, resolved_max_cache_bytes(options),
                  [this](int slot) { prompts.set_slot(slot, nullptr); }),
        piece_tokens(*model.tokenizer, kPieceTokenCapacity),
        model_fp(model_fingerprint(*model.model, *model.tokenizer)) {
    // cpp-httplib writes with plain send(): a client that hung up would raise
    // SIGPIPE and kill the process. Ignoring it turns that into a failed write.
    std::signal(SIGPIPE, SIG_IGN);
    if (options.parallel < 1) throw std::invalid_argument("--parallel must be at least 1");
    if (options.queue < 0) throw std::invalid_argument("--queue must be >= 0");
    if (options.max_connections < 1) throw std::invalid_argument("--max-connections must be at least 1");
    make_cache(model.model->config(), options.cache);  // the defaults must be valid before serving
    const int64_t one = planned_cache_bytes(model.model->config(), options.cache, options.default_max_tokens);
    if (one > admission.max_bytes())
      throw std::invalid_argument(fmt::format("--max-cache-bytes {} is less than one request's cache under the "
                                              "default cache options ({} bytes)", admission.max_bytes(), one));
    // Bodies are read by read_body(), which checks the size as it goes; this
    // only keeps httplib from refusing (and first reading) a large one itself.
    http.set_payload_max_length(std::numeric_limits<size_t>::max());
    if (!options.cors_origin.empty())
      http.set_default_headers({{"Access-Control-Allow-Origin", options.cors_origin}, {"Vary", "Origin"}});
    // SO_REUSEADDR only: httplib's defaults add SO_REUSEPORT, with which a
    // second server binds the same port and the two split the traffic.
    http.set_socket_options([this](socket_t sock) {
      const int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
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

  using Handler = std::function<void(const httplib::Request&, const std::string& body, httplib::Response&)>;

  // One request to endpoint `name`: the key first (needs_key), then the body
  // (POST: `reader`), then `handler`; errors become JSON replies, and a body
  // left unread ends the connection after the reply.
  void serve(const std::string& name, bool needs_key, const httplib::Request& req, httplib::Response& res,
             const httplib::ContentReader* reader, const Handler& handler) {
    bool body_read = reader == nullptr;
    try {
      if (!needs_key || authorised(req, res)) {
        const std::string body = reader ? read_body(req, *reader) : std::string();
        body_read = true;
        handler(req, body, res);
      }
    } catch (const RequestError& e) {
      reply_error(res, e.status, e.what());
    } catch (const std::invalid_argument& e) {
      reply_error(res, 400, e.what());
    } catch (const std::exception& e) {
      reply_error(res, 500, internal_error(e));
    }
    if (!body_read)
      if (Connection* c = Connection::current()) c->close_after_reply();
    metrics.count_request(name, res.status == -1 ? 200 : res.status);  // -1: httplib's "200 unless set"
  }
  void get(const std::string& path, const std::string& name, bool needs_key, Handler handler) {
    http.Get(path, [this, name, needs_key, handler](const httplib::Request& req, httplib::Response& res) {
      serve(name, needs_key, req, res, nullptr, handler);
    });
  }
  void post(const std::string& path, const std::string& name, Handler handler) {
    http.Post(path, [this, name, handler](const httplib::Request& req, httplib::Response& res,
                                          const httplib::ContentReader& reader) {
      serve(name, true, req, res, &reader, handler);
    });
  }

  // The request body, read only after the key was checked and refused as
  // soon as it passes --max-body, whatever its framing: the inflated bytes of
  // a gzip/deflate/br body count. Any Content-Type is read as it is.
  std::string read_body(const httplib::Request& req, const httplib::ContentReader& reader) {
    const std::string te = req.get_header_value("Transfer-Encoding");
    const bool chunked = strcasecmp(te.c_str(), "chunked") == 0;
    if (!te.empty() && !chunked)
      throw RequestError(501, fmt::format("Transfer-Encoding '{}' is not supported (only chunked)", te));
    if (!chunked && !req.has_header("Content-Length"))
      throw RequestError(411, "a request body needs Content-Length or Transfer-Encoding: chunked");
    if (req.is_multipart_form_data()) throw RequestError(415, "multipart bodies are not accepted: send JSON");
    const size_t limit = options.max_body_bytes;
    if (!chunked) {
      const std::string length = req.get_header_value("Content-Length");
      char* end = nullptr;
      errno = 0;
      const unsigned long long n = std::strtoull(length.c_str(), &end, 10);
      if (length.empty() || *end != '\0' || errno != 0 || length[0] == '-')
        throw RequestError(400, fmt::format("Content-Length '{}' is not a byte count", length));
      if (n > limit) throw too_large();
    }
    Connection* conn = Connection::current();
    if (conn) conn->start_body();
    std::string body;
    bool over = false;
    const bool ok = reader([&](const char* data, size_t n) {
      if (body.size() + n > limit) return !(over = true);
      body.append(data, n);
      return true;
    });
    if (over) throw too_large();
    if (!ok && conn && conn->past_deadline())
      throw RequestError(408, fmt::format("the request body did not arrive within {} s (--body-timeout)",
                                          options.body_timeout_seconds));
    if (!ok) throw RequestError(400, "the request body could not be read (cut short, or a bad chunk or encoding)");
    return body;
  }
  RequestError too_large() const {
    return RequestError(413, fmt::format("request body larger than {} bytes (--max-body)", options.max_body_bytes));
  }

  void routes() {
    post("/v1/completions", "completions", [this](auto& q, auto& b, auto& s) { complete(q, b, s, false); });
    post("/v1/chat/completions", "chat", [this](auto& q, auto& b, auto& s) { complete(q, b, s, true); });
    get("/v1/models", "models", true, [this](auto&, auto&, auto& res) {
      json j = {{"object", "list"},
                {"data", {{{"id", options.model_name}, {"object", "model"}, {"created", started},
                           {"owned_by", "lococo"}}}}};
      res.set_content(to_text(j), "application/json");
    });
    post("/tokenize", "tokenize", [this](auto&, auto& b, auto& s) { tokenize(b, s); });
    post("/detokenize", "detokenize", [this](auto&, auto& b, auto& s) { detokenize(b, s); });
    get("/props", "props", true, [this](auto&, auto&, auto& res) {
      res.set_content(to_text(props()), "application/json");
    });
    get("/slots", "slots", true, [this](auto&, auto&, auto& res) {
      json slots = json::array();
      const auto busy = admission.busy_slots();
      for (size_t i = 0; i < busy.size(); ++i) {
        const auto kept = prompts.slot(static_cast<int>(i));
        slots.push_back({{"id", i}, {"is_processing", static_cast<bool>(busy[i])}, {"n_ctx", options.cache.budget},
                         {"n_prompt_tokens_cached", kept ? kept->saved.tokens : 0}});
      }
      res.set_content(to_text(slots), "application/json");
    });
    post(R"(/slots/(\d{1,6}))", "slots", [this](auto& q, auto& b, auto& s) { slot_action(q, b, s); });
    if (!options.cors_origin.empty())  // browsers' preflight before a POST with JSON or a key
      http.Options(".*", [](const httplib::Request&, httplib::Response& res) {
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
        res.status = 204;
      });
    get("/health", "health", false, [this](auto&, auto&, auto& res) {
      const auto [busy, waiting] = admission.busy_and_waiting();
      res.set_content(to_text({{"status", "ok"}, {"slots_busy", busy}, {"queued", waiting}}), "application/json");
    });
    get("/metrics", "metrics", !options.metrics_open, [this](auto&, auto&, auto& res) {
      const auto [busy, waiting] = admission.busy_and_waiting();
      res.set_content(metrics.render(busy, waiting), "text/plain; version=0.0.4");
    });
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
  void tokenize(const std::string& body, httplib::Response& res) {
    const json j = server_detail::parse_body(body);
    const std::string content = server_detail::get_string(j, "content");
    const bool add_special = server_detail::get_bool(j, "add_special", false);
    const bool with_pieces = server_detail::get_bool(j, "with_pieces", false);
    json tokens = json::array();
    for (const int64_t t : model.tokenizer->encode(content, add_special))
      tokens.push_back(with_pieces ? json{{"id", t}, {"piece", model.tokenizer->piece_text(t)}} : json(t));
    res.set_content(to_text({{"tokens", tokens}}), "application/json");
  }

  // llama.cpp's /detokenize: {"tokens": [id]} -> {"content"}.
  void detokenize(const std::string& body, httplib::Response& res) {
    const json j = server_detail::parse_body(body);
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

  // The prompt read into a fresh cache of the request's policy, continuing
  // from a kept state that has read its beginning (server/prompt_cache.h).
  struct ReadPrompt {
    std::unique_ptr<KvCache> cache;
    torch::Tensor logits;                      // [V] after the prompt; undefined when reading stopped
    int64_t tokens = 0;                        // of the prompt
    int64_t reused = 0;                        // prompt tokens a kept state had read already
    double seconds = 0;                        // spent reading
    std::optional<SavedState> after;           // the cache right after the prompt (n > 1: every choice starts there)
  };

  // The state a request may continue from: its named state (which must fit
  // its cache options: 400 naming the field otherwise), else its slot's.
  std::shared_ptr<const PromptState> reusable_state(const CompletionRequest& r, int slot) {
    const int64_t vocab = model.model->config().vocab_size;
    if (r.state.empty()) {
      auto s = r.cache_prompt ? prompts.slot(slot) : nullptr;
      return s && state_mismatch(s->saved, r.cache, model_fp, vocab).empty() ? s : nullptr;
    }
    auto s = read_named_state(r.state, "cache.state");
    if (!s) return nullptr;
    const std::string why = state_mismatch(s->saved, r.cache, model_fp, vocab);
    if (!why.empty()) throw RequestError(400, fmt::format("'cache.state' {}: {}", r.state, why));
    return s;
  }

  // A state file of --slot-save-path; a file that is not a usable state is the
  // client's 400 (its details, with the server's paths, go to the log only).
  std::shared_ptr<const PromptState> read_named_state(const std::string& name, const char* field) {
    try {
      return prompts.read(name);
    } catch (const std::runtime_error& e) {
      spdlog::warn("state file {}: {}", name, e.what());
      throw RequestError(400, fmt::format("'{}': '{}' is not a readable lococo state (see the server log)", field, name));
    }
  }

  // `progress(done)` hears the prompt tokens read so far (reused ones
  // included); false stops reading. The state kept for later requests ends
  // at the prompt's last whole chunk, so that a prompt continued from it is
  // read in the same chunks as a fresh one: reuse changes no result, also
  // under a bounded policy.
  ReadPrompt read_prompt(const CompletionRequest& r, const std::vector<int64_t>& prompt, int slot,
                         const PrefillProgress& progress) {
    const auto t0 = std::chrono::steady_clock::now();
    ReadPrompt out;
    const auto n = static_cast<int64_t>(prompt.size());
    out.tokens = n;
    out.cache = make_cache(model.model->config(), r.cache);
    if (r.state_continue) return continue_state(r, prompt, progress);
    const auto from = reusable_state(r, slot);
    if (from) out.reused = reusable_tokens(*from, prompt);
    torch::Tensor logits;  // [V] after what the cache has read
    if (out.reused > 0) {
      out.cache->restore(from->saved.snapshot);
      logits = from->saved.last_logits.clone();
    }
    auto read = [&](int64_t begin, int64_t end) {  // prompt[begin, end) into the cache
      if (end <= begin) return true;
      const std::vector<int64_t> ids(prompt.begin() + begin, prompt.begin() + end);
      logits = prefill(*model.model, *out.cache, ids, r.cache.chunk,
                       [&](int64_t done) { return !progress || progress(begin + done); });
      return logits.defined();
    };
    const int64_t aligned = n / r.cache.chunk * r.cache.chunk;
    if (!read(out.reused, aligned)) return out;
    std::shared_ptr<const PromptState> kept = from && out.reused > 0 ? from : nullptr;
    const bool new_named_state = !r.state.empty() && !from;
    if (aligned > out.reused && (r.cache_prompt || new_named_state)) {
      auto s = std::make_shared<PromptState>();
      s->ids.assign(prompt.begin(), prompt.begin() + aligned);
      s->text = r.prompt;
      s->saved = capture_state(*out.cache, r.cache, model_fp, text_fingerprint(s->ids), aligned, logits);
      kept = s;
    }
    if (!read(std::max(out.reused, aligned), n)) return out;
    out.logits = logits;
    metrics.count_prompt(n - out.reused, out.reused);
    if (r.cache_prompt && kept) prompts.set_slot(slot, kept);
    if (new_named_state && kept) prompts.write(r.state, *kept);
    if (r.n > 1) out.after = capture_state(*out.cache, r.cache, model_fp, text_fingerprint(prompt), n, logits);
    out.seconds = seconds_since(t0);
    return out;
  }

  // "cache": {"state": NAME, "continue": true}: the prompt is read after the
  // text the named state read, as `generate --load-state` does; the slot keeps
  // nothing (the next question starts from the named state again).
  ReadPrompt continue_state(const CompletionRequest& r, const std::vector<int64_t>& prompt,
                            const PrefillProgress& progress) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto from = reusable_state(r, -1);
    if (!from) throw RequestError(404, fmt::format("'cache.state': no state named '{}' to continue", r.state));
    ReadPrompt out;
    out.cache = make_cache(model.model->config(), r.cache);
    out.cache->restore(from->saved.snapshot);
    out.tokens = static_cast<int64_t>(prompt.size());
    out.reused = from->saved.tokens;
    out.logits = prompt.empty() ? from->saved.last_logits.clone()
                                : prefill(*model.model, *out.cache, prompt, r.cache.chunk, progress);
    if (!out.logits.defined()) return out;
    metrics.count_prompt(out.tokens, out.reused);
    if (r.n > 1) out.after = capture_state(*out.cache, r.cache, model_fp, "", out.tokens, out.logits);
    out.seconds = seconds_since(t0);
    return out;
  }

  // One choice, generated from the prompt's state in `p` (choice 0 continues
  // the cache as read; later ones restore the kept state). `on_text` returning
  // false (client gone) cancels; so does the request's deadline.
  GenerateResult run_choice(const CompletionRequest& r, ReadPrompt& p, int64_t choice, const GenerateOptions& gen,
                            std::chrono::steady_clock::time_point until, const TextCallback& on_text,
                            std::string* cache_desc, int64_t* cache_bytes) {
    torch::Tensor logits = p.logits;
    if (choice > 0) {
      p.cache->restore(p.after->snapshot);
      logits = p.after->last_logits.clone();
    }
    const int64_t bytes = p.cache->bytes();
    metrics.add_cache_bytes(bytes);
    const auto t0 = std::chrono::steady_clock::now();
    bool timed_out = false;
    TextCallback guarded = [&](const std::string& piece) {
      if (std::chrono::steady_clock::now() > until) {
        timed_out = true;
        return false;
      }
      return on_text ? on_text(piece) : true;
    };
    GenerateResult g;
    try {
      g = continue_generation(*model.model, *model.tokenizer, *p.cache, logits, gen, guarded);
    } catch (...) {
      metrics.add_cache_bytes(-bytes);
      throw;
    }
    if (timed_out) g.finish_reason = "timeout";
    *cache_desc = p.cache->describe();
    *cache_bytes = std::max(bytes, p.cache->bytes());
    metrics.add_cache_bytes(-bytes);
    g.prompt_tokens = p.tokens;
    metrics.count_generation(choice == 0 ? p.tokens : 0, static_cast<int64_t>(g.tokens.size()),
                             seconds_since(t0) + (choice == 0 ? p.seconds : 0));
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

  static json usage(const ReadPrompt& p, int64_t completion_tokens) {
    return {{"prompt_tokens", p.tokens}, {"completion_tokens", completion_tokens},
            {"total_tokens", p.tokens + completion_tokens},
            {"prompt_tokens_details", {{"cached_tokens", p.reused}}}};
  }

  static json lococo_info(const ReadPrompt& p, const std::string& desc, int64_t bytes) {
    return {{"cache", desc}, {"cache_bytes", bytes}, {"prompt_tokens_reused", p.reused}};
  }

  // The prompt's token ids as the model reads them (BOS first); nullopt when
  // `keep_going()` said stop while a long prompt was tokenised.
  std::optional<std::vector<int64_t>> prompt_ids(const CompletionRequest& r, const std::function<bool()>& keep_going) {
    // Chat: template markers as special tokens, message content as plain text.
    auto ids = r.chat ? std::optional(encode_chat(*model.tokenizer, r.chat_segments, false))
                      : piece_tokens.encode(r.prompt, keep_going);
    const int64_t bos = model.tokenizer->bos_id();
    if (ids && r.gen.add_bos && !r.state_continue && bos >= 0 && (ids->empty() || (*ids)[0] != bos))
      ids->insert(ids->begin(), bos);
    return ids;
  }

  // Cache bytes a request may hold at once: its cache, the copy that n > 1
  // choices restart from, and the prompt state its slot keeps. Before the
  // prompt is tokenised a token is taken to be at least one byte of it.
  int64_t request_bytes(const CompletionRequest& r, int64_t prompt_tokens) const {
    const int64_t copies = 1 + (r.n > 1 ? 1 : 0) + (r.cache_prompt || !r.state.empty() ? 1 : 0);
    const int64_t tokens = std::min(prompt_tokens, options.prompt_limit(r.cache.policy)) + r.gen.max_tokens;
    const int64_t bytes = copies * planned_cache_bytes(model.model->config(), r.cache, tokens);
    if (bytes > admission.max_bytes())
      throw RequestError(400, fmt::format("the request's cache needs {} bytes, more than the server allows "
                                          "(--max-cache-bytes {}): ask for a smaller cache.budget or max_tokens",
                                          bytes, admission.max_bytes()));
    return bytes;
  }

  // A slot for `r`, or the status that refuses it.
  std::shared_ptr<SlotTicket> admit(const CompletionRequest& r, const std::function<bool()>& client_gone) {
    const int64_t bytes = request_bytes(r, static_cast<int64_t>(r.prompt.size()) + 8);
    const auto entry = admission.enter(r.cache_prompt ? prompts.slots_by_text(r.prompt) : std::vector<int>{}, bytes,
                                       client_gone);
    if (entry.refusal == Admission::kFull) throw RequestError(503, "server busy: all slots and the queue are full, retry later");
    if (entry.refusal == Admission::kShuttingDown) throw RequestError(503, "server shutting down");
    if (entry.refusal == Admission::kClientGone) throw RequestError(kClientClosed, "the client closed the request");
    const int slot = entry.slot;
    return std::make_shared<SlotTicket>(admission, slot, [this, slot]() -> int64_t {
      const auto kept = prompts.slot(slot);
      return kept ? kept->saved.bytes() : 0;
    });
  }
  static constexpr int kClientClosed = 499;  // nginx's status for a request its client left (nobody reads it)

  void complete(const httplib::Request&, const std::string& body, httplib::Response& res, bool chat) {
    auto r = std::make_shared<CompletionRequest>(server_detail::parse_completion_request(
        body, chat, options, chat_tmpl, model.dir.string()));
    Connection* conn = Connection::current();
    const std::function<bool()> client_gone = [conn] { return conn && conn->peer_gone(); };
    auto ticket = admit(*r, client_gone);
    // Inside the slot from here: tokenising, the cache, the generation.
    const auto until = deadline();
    const auto keep_going = [&] { return std::chrono::steady_clock::now() <= until && !client_gone(); };
    auto ids = prompt_ids(*r, keep_going);
    if (!ids && client_gone()) throw RequestError(kClientClosed, "the client closed the request");
    if (!ids) throw RequestError(503, fmt::format("the prompt was not tokenised within {} s (--timeout)",
                                                  options.timeout_seconds));
    auto prompt = std::make_shared<std::vector<int64_t>>(std::move(*ids));
    if (static_cast<int64_t>(prompt->size()) > options.prompt_limit(r->cache.policy))
      throw RequestError(400, fmt::format("prompt has {} tokens, more than the limit {} (--max-prompt-tokens)",
                                          prompt->size(), options.prompt_limit(r->cache.policy)));
    request_bytes(*r, static_cast<int64_t>(prompt->size()));  // tokens it was admitted with were an estimate
    const std::string id = fmt::format("{}-{}", chat ? "chatcmpl" : "cmpl", next_id++);
    if (r->stream) return stream(res, r, prompt, ticket, id, until);
    ReadPrompt p = read_prompt(*r, *prompt, ticket->slot, [&](int64_t) { return keep_going(); });
    std::string desc = p.cache->describe();
    int64_t bytes = p.cache->bytes(), completion_tokens = 0;
    json choices = json::array();
    const TextCallback still_wanted = [&](const std::string&) { return !client_gone(); };
    for (int64_t i = 0; i < r->n; ++i) {
      GenerateResult g;
      g.finish_reason = "timeout";  // the prompt was not read in time: no text
      if (p.logits.defined()) g = run_choice(*r, p, i, choice_options(*r, i), until, still_wanted, &desc, &bytes);
      if (client_gone()) throw RequestError(kClientClosed, "the client closed the request");
      json c = choice(*r, i, g.text, finish_reason(g.finish_reason), false, true);
      if (r->gen.top_logprobs >= 0) c["logprobs"] = logprobs(*r, *model.tokenizer, g.logprobs);
      choices.push_back(std::move(c));
      completion_tokens += static_cast<int64_t>(g.tokens.size());
    }
    json j = reply_head(*r, options.model_name, id, false);
    j["choices"] = std::move(choices);
    j["usage"] = usage(p, completion_tokens);
    j["lococo"] = lococo_info(p, desc, bytes);
    res.set_content(to_text(j), "application/json");
  }

  // Server-sent events: the generation runs inside the content provider, so a
  // failed write (client gone) cancels it and frees the slot. While the prompt
  // is read, a progress event (return_progress) or a keep-alive comment goes
  // out at most every kKeepAliveSeconds, which also notices a client that
  // left. Choices stream one after another; with logprobs, each chunk carries
  // those of the tokens sampled since the last chunk.
  static constexpr double kKeepAliveSeconds = 0.5;

  void stream(httplib::Response& res, std::shared_ptr<CompletionRequest> r,
              std::shared_ptr<std::vector<int64_t>> prompt, std::shared_ptr<SlotTicket> ticket, std::string id,
              std::chrono::steady_clock::time_point until) {
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [this, r, prompt, ticket, id, until](size_t,
                                                                                             httplib::DataSink& sink) {
      auto write = [&](const std::string& event) { return sink.write(event.data(), event.size()); };
      auto send = [&](const json& j) { return write("data: " + to_text(j) + "\n\n"); };
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
      try {
        const auto t0 = std::chrono::steady_clock::now();
        auto last_write = t0;
        bool client_gone = false;
        const int64_t total = static_cast<int64_t>(prompt->size());
        auto progress = [&](int64_t done) {
          const auto now = std::chrono::steady_clock::now();
          if (now > until) return false;
          if (std::chrono::duration<double>(now - last_write).count() < kKeepAliveSeconds && done < total) return true;
          last_write = now;
          bool ok;
          if (r->return_progress) {
            json j = reply_head(*r, options.model_name, id, true);
            j["choices"] = json::array();
            j["prompt_progress"] = {{"total", total}, {"processed", done},
                                    {"time_ms", std::llround(seconds_since(t0) * 1000)}};
            ok = send(j);
          } else {
            ok = write(": reading the prompt\n\n");
          }
          client_gone = !ok;
          return ok;
        };
        ReadPrompt p = read_prompt(*r, *prompt, ticket->slot, progress);
        if (client_gone) return false;
        std::string desc = p.cache->describe();
        int64_t bytes = p.cache->bytes(), completion_tokens = 0;
        for (int64_t i = 0; i < r->n; ++i) {
          bool first = true;
          offset = 0;
          GenerateResult g;
          g.finish_reason = "timeout";  // the prompt was not read in time: no text
          if (p.logits.defined()) {
            GenerateOptions gen = choice_options(*r, i);
            gen.on_logprob = [&](const TokenLogprob& t) { pending.push_back(t); };
            TextCallback on_text = [&](const std::string& piece) {
              const bool ok = send(chunk(i, piece, nullptr, first));
              first = false;
              return ok;
            };
            g = run_choice(*r, p, i, gen, until, on_text, &desc, &bytes);
          }
          if (g.finish_reason == "cancelled") return false;
          json j = chunk(i, "", finish_reason(g.finish_reason), first);
          j["lococo"] = lococo_info(p, desc, bytes);
          if (!send(j)) return false;
          completion_tokens += static_cast<int64_t>(g.tokens.size());
        }
        if (r->include_usage) {
          json j = reply_head(*r, options.model_name, id, true);
          j["choices"] = json::array();
          j["usage"] = usage(p, completion_tokens);
          if (!send(j)) return false;
        }
      } catch (const RequestError& e) {
        send(error_body(e.status, e.what()));
      } catch (const std::exception& e) {
        send(error_body(500, internal_error(e)));
      }
      write("data: [DONE]\n\n");
      sink.done();
      return true;
    });
  }

  // POST /slots/{id}?action=save|restore|erase (llama.cpp's): a slot's kept
  // prompt state to and from a file of --slot-save-path ({"filename": name}).
  void slot_action(const httplib::Request& req, const std::string& request_body, httplib::Response& res) {
    const int slot = std::stoi(req.matches[1]);
    prompts.slot(slot);  // 400 for a slot that does not exist
    const std::string action = req.get_param_value("action");
    const auto t0 = std::chrono::steady_clock::now();
    if (action == "erase") {
      const auto s = prompts.slot(slot);
      if (!admission.set_kept(slot, 0)) throw RequestError(409, fmt::format("slot {} is processing a request", slot));
      prompts.set_slot(slot, nullptr);
      res.set_content(to_text({{"id_slot", slot}, {"n_erased", s ? s->saved.tokens : 0}}), "application/json");
      return;
    }
    if (action != "save" && action != "restore") throw RequestError(400, "'action' must be save, restore or erase");
    if (!prompts.has_dir()) throw RequestError(400, "slot files need the server to run with --slot-save-path DIR");
    const json body = server_detail::parse_body(request_body);
    const std::string file = server_detail::get_string(body, "filename");
    server_detail::check_state_name(file, "filename");
    if (action == "save") {
      const auto s = prompts.slot(slot);
      if (!s) throw RequestError(400, fmt::format("slot {} keeps no prompt state to save", slot));
      const int64_t bytes = prompts.write(file, *s);
      res.set_content(to_text({{"id_slot", slot}, {"filename", file}, {"n_saved", s->saved.tokens},
                               {"n_written", bytes}, {"timings", {{"save_ms", seconds_since(t0) * 1000}}}}),
                      "application/json");
      return;
    }
    const auto s = read_named_state(file, "filename");
    if (!s) throw RequestError(404, fmt::format("no state file '{}' in --slot-save-path", file));
    if (s->saved.model != model_fp) throw RequestError(400, fmt::format("'{}' was saved with another model", file));
    if (!admission.set_kept(slot, s->saved.bytes()))
      throw RequestError(409, fmt::format("slot {} is processing a request, or its state would pass --max-cache-bytes",
                                          slot));
    prompts.set_slot(slot, s);
    res.set_content(to_text({{"id_slot", slot}, {"filename", file}, {"n_restored", s->saved.tokens},
                             {"n_read", s->saved.bytes()}, {"timings", {{"restore_ms", seconds_since(t0) * 1000}}}}),
                    "application/json");
  }
};

int64_t ServerOptions::prompt_limit(const std::string& policy) const {
  if (max_prompt_tokens > 0) return max_prompt_tokens;
  return is_bounded(policy) ? INT64_MAX : kFullCachePromptTokens;
}

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
  impl_->admission.drain();
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
