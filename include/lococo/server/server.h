// `lococo serve`: an OpenAI-compatible HTTP server (cpp-httplib) in which every
// request runs under its own fixed-budget KV cache, so no prompt length can
// exhaust memory.
//
// Endpoints
//   POST /v1/completions        {prompt, max_tokens | max_completion_tokens, temperature, top_p, top_k,
//                                seed (random if absent), stop, stream, stream_options.include_usage, n,
//                                logprobs (0-5 alternatives), ignore_eos, cache}
//   POST /v1/chat/completions   {messages: [{role, content}], ...the same fields; logprobs: true and
//                                top_logprobs (0-20)}. Roles system, developer (= system), user,
//                                assistant, tool; content a string or an array of text parts.
//   GET  /v1/models             the one loaded model
//   GET  /health                {"status":"ok", "slots_busy", "queued"}
//   GET  /metrics               Prometheus text (requests, errors, tokens, latency, cache bytes)
//   POST /tokenize, /detokenize, GET /props, /slots   as llama.cpp's server
// n choices are generated one after another in the request's slot (streamed
// in turn); finish_reason is "stop" or "length" (the --timeout too).
// `cache` is lococo's extension: {"policy", "budget", "chunk"}; omitted fields
// take the server's defaults (ServerOptions::cache).
// With "stream": true the reply is server-sent events, one `data: {json}` per
// piece of text and a final `data: [DONE]`.
//
// Admission: `parallel` requests generate at once, each in its own slot; up to
// `queue` more wait; anything beyond gets 503 with Retry-After. A request's
// prompt is tokenised and its cache built inside its slot, and the KV-cache
// bytes of the running requests and of the slots' kept prompt states stay
// within `max_cache_bytes` (a request that could never fit gets 400 naming it).
// A queued or running request whose client hangs up stops costing anything.
// Errors are JSON:
//   {"error": {"message": "...", "type": "invalid_request_error", "code": 400}}
//
// Connections (src/server/http_connection.h): each has its own thread, up to
// `max_connections` (more get 503 at once); a request's headers must arrive
// within `header_timeout_seconds` and its body within `body_timeout_seconds`
// (408 otherwise); a body is read only after the API key is checked, and
// refused with 413 as soon as it passes `max_body_bytes`, whatever its framing
// (Content-Length, chunked) or encoding (gzip, deflate, br: inflated bytes
// count). JSON bodies are accepted under any Content-Type (curl -d sends
// application/x-www-form-urlencoded). SIGTERM (stop()) finishes the running
// requests, answers the queued ones 503 and exits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "lococo/kv/cache.h"
#include "lococo/model/model_dir.h"

namespace lococo {

struct ServerOptions {
  std::string host = "127.0.0.1";      // bind address (loopback unless asked)
  int port = 8080;                     // 0 = any free port (see Server::port())
  int parallel = 1;                    // requests generating at once (slots)
  int queue = 16;                      // requests waiting for a slot; more get 503
  size_t max_body_bytes = 32 << 20;    // larger request bodies get 413 (a book fits)
  int64_t max_cache_bytes = 0;         // cache bytes of running requests + kept states (0: a quarter of the RAM)
  int max_connections = 512;           // open connections; more are answered 503 and closed
  double header_timeout_seconds = 10;  // a request line and headers must arrive within this
  double body_timeout_seconds = 60;    // a body must arrive within this
  // Longer prompts get 400. 0: no limit under a bounded policy (its memory
  // does not grow with the prompt; reading is bounded by --timeout) and
  // kFullCachePromptTokens under the full cache. Also the largest cache.budget.
  int64_t max_prompt_tokens = 0;
  static constexpr int64_t kFullCachePromptTokens = 65536;
  int64_t prompt_limit(const std::string& policy) const;  // INT64_MAX for none
  int64_t budget_limit() const { return max_prompt_tokens > 0 ? max_prompt_tokens : kFullCachePromptTokens; }
  int64_t max_tokens_limit = 4096;     // largest max_tokens a request may ask
  int64_t default_max_tokens = 128;    // max_tokens when a request gives none
  int64_t max_choices = 8;             // largest n (choices per request) a request may ask
  std::string cors_origin;             // non-empty: Access-Control-Allow-Origin sent with every reply
  double timeout_seconds = 300;        // a generation running longer ends ("timeout")
  std::string api_key;                 // non-empty: require "Authorization: Bearer <key>"
  bool metrics_open = false;           // /metrics answers without the key (default: it needs it too)
  std::string chat_template;           // empty: detected from the model directory
  std::string model_name = "lococo";   // id reported by /v1/models and in replies
  std::string slot_save_path;          // directory of slot files and named states ("" = none)
  CacheOptions cache;                  // default policy, budget, chunk, ... per request
};

class Server {
 public:
  Server(LoadedModel model, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds (throws std::runtime_error naming host:port when it cannot, also
  // when another server holds the port); returns the port.
  int bind();
  // Serves until stop(); in-flight requests finish before it returns.
  void listen();
  // Stops accepting and refuses queued requests (503); running ones finish.
  // Safe from any thread.
  void stop();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lococo
