#include "server/openai_reply.h"

#include <ctime>

namespace lococo::server_detail {

json error_body(int status, const std::string& message) {
  const char* type = status == 401 ? "authentication_error" : status == 503 ? "server_busy"
                   : status >= 500 ? "server_error" : "invalid_request_error";
  return {{"error", {{"message", message}, {"type", type}, {"code", status}}}};
}

std::string finish_reason(const std::string& ours) { return ours == "eos" ? "stop" : ours; }

json reply_head(const CompletionRequest& r, const std::string& model_name, const std::string& id, bool chunk) {
  const char* object = r.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", id}, {"object", object}, {"created", static_cast<int64_t>(std::time(nullptr))},
          {"model", model_name}};
}

json choice(const CompletionRequest& r, const std::string& text, const json& finish, bool chunk, bool first) {
  json c = {{"index", 0}, {"finish_reason", finish}};
  if (!r.chat) {
    c["text"] = text;
  } else if (chunk) {
    c["delta"] = json::object();
    if (first) c["delta"]["role"] = "assistant";
    if (!text.empty()) c["delta"]["content"] = text;
  } else {
    c["message"] = {{"role", "assistant"}, {"content", text}};
  }
  return c;
}

}  // namespace lococo::server_detail
