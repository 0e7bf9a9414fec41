#include "server/openai_reply.h"

#include <ctime>

namespace lococo::server_detail {

json error_body(int status, const std::string& message) {
  const char* type = status == 401 ? "authentication_error" : status == 503 ? "server_busy"
                   : status >= 500 ? "server_error" : "invalid_request_error";
  return {{"error", {{"message", message}, {"type", type}, {"code", status}}}};
}

std::string finish_reason(const std::string& ours) {
  return ours == "length" || ours == "timeout" ? "length" : "stop";
}

json reply_head(const CompletionRequest& r, const std::string& model_name, const std::string& id, bool chunk) {
  const char* object = r.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", id}, {"object", object}, {"created", static_cast<int64_t>(std::time(nullptr))},
          {"model", model_name}};
}

json choice(const CompletionRequest& r, int64_t index, const std::string& text, const json& finish, bool chunk,
            bool first) {
  json c = {{"index", index}, {"finish_reason", finish}};
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

namespace {

json bytes_of(const std::string& s) {
  json out = json::array();
  for (const unsigned char c : s) out.push_back(c);
  return out;
}

json chat_logprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& tokens) {
  json content = json::array();
  for (const auto& t : tokens) {
    const std::string piece = tokenizer.piece_text(t.id);
    json top = json::array();
    for (const auto& [id, lp] : t.top) {
      const std::string alt = tokenizer.piece_text(id);
      top.push_back({{"token", alt}, {"logprob", lp}, {"bytes", bytes_of(alt)}});
    }
    content.push_back({{"token", piece}, {"logprob", t.logprob}, {"bytes", bytes_of(piece)}, {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

json completion_logprobs(const Tokenizer& tokenizer, const std::vector<TokenLogprob>& tokens, int64_t offset) {
  json pieces = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
  for (const auto& t : tokens) {
    const std::string piece = tokenizer.piece_text(t.id);
    pieces.push_back(piece);
    values.push_back(t.logprob);
    json top = json::object();
    for (const auto& [id, lp] : t.top) top[tokenizer.piece_text(id)] = lp;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += static_cast<int64_t>(piece.size());
  }
  return {{"tokens", pieces}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

}  // namespace

json logprobs(const CompletionRequest& r, const Tokenizer& tokenizer, const std::vector<TokenLogprob>& tokens,
              int64_t offset) {
  return r.chat ? chat_logprobs(tokenizer, tokens) : completion_logprobs(tokenizer, tokens, offset);
}

}  // namespace lococo::server_detail
