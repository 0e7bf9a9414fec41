// Internal to the server: the OpenAI-shaped JSON of replies and errors
// (completions and chat, whole and streamed).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "server/request.h"

namespace lococo::server_detail {

using nlohmann::json;

// {"error": {"message", "type", "code"}} with the type OpenAI gives `status`.
json error_body(int status, const std::string& message);
// Our finish reason as OpenAI names it ("eos" -> "stop").
std::string finish_reason(const std::string& ours);
// id, object ("text_completion", "chat.completion" or its ".chunk"), created, model.
json reply_head(const CompletionRequest& r, const std::string& model_name, const std::string& id, bool chunk);
// One choice: text (completions), message (chat) or delta (chat, streamed; the
// role in the first chunk only).
json choice(const CompletionRequest& r, const std::string& text, const json& finish, bool chunk, bool first);

}  // namespace lococo::server_detail
