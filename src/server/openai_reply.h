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
// Our finish reason as one of OpenAI's: "length" (max_tokens, or the
// server's timeout) or "stop" (EOS or a stop string).
std::string finish_reason(const std::string& ours);
// id, object ("text_completion", "chat.completion" or its ".chunk"), created, model.
json reply_head(const CompletionRequest& r, const std::string& model_name, const std::string& id, bool chunk);
// Choice `index`: text (completions), message (chat) or delta (chat,
// streamed; the role in the first chunk only).
json choice(const CompletionRequest& r, int64_t index, const std::string& text, const json& finish, bool chunk,
            bool first);
// The "logprobs" of a choice, or of a streamed chunk, for the given tokens:
// completions {tokens, token_logprobs, top_logprobs, text_offset} (offsets in
// the generated text from `offset`); chat {content: [{token, logprob, bytes,
// top_logprobs}]}.
json logprobs(const CompletionRequest& r, const Tokenizer& tokenizer, const std::vector<TokenLogprob>& tokens,
              int64_t offset = 0);

}  // namespace lococo::server_detail
