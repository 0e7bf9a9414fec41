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
  std::string prompt;           // rendered through the chat template when `chat`
  bool stream = false;
  GenerateOptions gen;          // max_tokens, stop, sampling (chunk from `cache`)
  CacheOptions cache;           // server defaults overridden by the request's `cache`
};

// `body` is the raw request text. `model_dir` finds compressors for budgets
// other than the default one.
CompletionRequest parse_completion_request(const std::string& body, bool chat, const ServerOptions& options,
                                           const ChatTemplate& tmpl, const std::string& model_dir);

}  // namespace lococo::server_detail
