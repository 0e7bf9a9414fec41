// Parsing and checking the JSON body of a completion request (server.cpp).
// Every problem becomes a RequestError with the HTTP status to answer and a
// message naming the field.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lococo/tokenizer/chat_template.h"
#include "lococo/generate/generate.h"
#include "lococo/kv/cache.h"
#include "lococo/server/server.h"

namespace lococo::server_detail {

struct RequestError : std::runtime_error {
  RequestError(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

struct CompletionRequest {
  bool chat = false;            // /v1/chat/completions
  std::string prompt;           // the prompt text (`chat`: the template's rendering, for the record)
  std::vector<ChatSegment> chat_segments;  // `chat`: the rendering the prompt's ids come from (encode_chat)
  bool stream = false;
  bool include_usage = false;   // stream_options.include_usage: a last chunk with the usage
  int64_t n = 1;                // choices, generated one after another (choice i samples with seed + i)
  GenerateOptions gen;          // max_tokens, stop, sampling, top_logprobs (chunk from `cache`)
  CacheOptions cache;           // server defaults overridden by the request's `cache`
  bool cache_prompt = true;     // continue from the slot's kept state when the prompt begins with its tokens
  std::string state;            // cache.state: a named state in --slot-save-path ("" = none)
  bool state_continue = false;  // cache.continue: the prompt continues the state's text (no BOS; the state must exist)
  bool return_progress = false; // stream prefill progress events (llama.cpp's field)
};

// The request body as a JSON object (400 otherwise).
nlohmann::json parse_body(const std::string& body);
// Typed fields (400 naming the field when absent or of the wrong type).
std::string get_string(const nlohmann::json& j, const char* key);
bool get_bool(const nlohmann::json& j, const char* key, bool fallback);
// An array of token ids, each in [0, vocab_size).
std::vector<int64_t> get_token_ids(const nlohmann::json& j, const char* key, int64_t vocab_size);

// `body` is the raw request text. `model_dir` finds compressors for budgets
// other than the default one.
CompletionRequest parse_completion_request(const std::string& body, bool chat, const ServerOptions& options,
                                           const ChatTemplate& tmpl, const std::string& model_dir);

}  // namespace lococo::server_detail
