#include "server/request.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <random>

#include <fmt/format.h>

#include "lococo/kv/registry.h"
#include "lococo/model/model_dir.h"
#include "server/prompt_cache.h"

namespace lococo::server_detail {

using nlohmann::json;

namespace {
[[noreturn]] void bad(const std::string& message) { throw RequestError(400, message); }
}  // namespace

json parse_body(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) bad("request body is not valid JSON");
  if (!j.is_object()) bad("request body must be a JSON object");
  return j;
}

bool get_bool(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) bad(fmt::format("'{}' must be true or false", key));
  return j[key].get<bool>();
}

std::string get_string(const json& j, const char* key) {
  if (!j.contains(key)) bad(fmt::format("'{}' is required", key));
  if (!j[key].is_string()) bad(fmt::format("'{}' must be a string", key));
  return j[key].get<std::string>();
}

std::vector<int64_t> get_token_ids(const json& j, const char* key, int64_t vocab_size) {
  if (!j.contains(key) || !j[key].is_array()) bad(fmt::format("'{}' must be an array of token ids", key));
  std::vector<int64_t> ids;
  for (size_t i = 0; i < j[key].size(); ++i) {
    const json& t = j[key][i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab_size)
      bad(fmt::format("'{}[{}]' must be a token id in [0, {})", key, i, vocab_size));
    ids.push_back(t.get<int64_t>());
  }
  return ids;
}

namespace {

// Typed field readers: absent or null -> the fallback; wrong type -> 400.
int64_t get_int(const json& j, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const json& v = j[key];
  const auto out_of_range = [&] { bad(fmt::format("'{}' must be between {} and {}", key, lo, hi)); };
  if (v.is_number_unsigned()) {  // up to 2^64 - 1: compared as unsigned, never cast blindly
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::max<int64_t>(hi, 0)) || static_cast<int64_t>(u) < lo) out_of_range();
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    const int64_t n = v.get<int64_t>();
    if (n < lo || n > hi) out_of_range();
    return n;
  }
  if (!v.is_number_float() || !std::isfinite(v.get<double>()) || v.get<double>() != std::floor(v.get<double>()))
    bad(fmt::format("'{}' must be an integer", key));
  // Compared as doubles before any cast: 1e300 is out of range, not undefined behaviour.
  const double d = v.get<double>();
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi)) out_of_range();
  return static_cast<int64_t>(d);
}

double get_number(const json& j, const char* key, double fallback, double lo, double hi) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) bad(fmt::format("'{}' must be a number", key));
  const double v = j[key].get<double>();
  if (!(v >= lo && v <= hi)) bad(fmt::format("'{}' must be between {} and {}", key, lo, hi));
  return v;
}

// "stop": a string or up to 4 strings.
std::vector<std::string> get_stop(const json& j) {
  if (!j.contains("stop") || j["stop"].is_null()) return {};
  const json& s = j["stop"];
  if (s.is_string()) return {s.get<std::string>()};
  if (!s.is_array() || s.size() > 4) bad("'stop' must be a string or an array of at most 4 strings");
  std::vector<std::string> out;
  for (const auto& e : s) {
    if (!e.is_string()) bad("'stop' must be a string or an array of at most 4 strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

// A message's content: a string, null (an assistant turn that only called
// tools) or an array of parts of which only {"type": "text", "text"} exist here.
std::string get_content(const json& m, size_t i) {
  const json& c = m["content"];
  if (c.is_string()) return c.get<std::string>();
  if (c.is_null()) return "";
  if (!c.is_array()) bad(fmt::format("'messages[{}].content' must be a string or an array of text parts", i));
  std::string out;
  for (size_t k = 0; k < c.size(); ++k) {
    const json& part = c[k];
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
        !part["text"].is_string())
      bad(fmt::format("'messages[{}].content[{}]' must be {{\"type\": \"text\", \"text\": string}} "
                      "(this model reads text only)", i, k));
    out += part["text"].get<std::string>();
  }
  return out;
}

// OpenAI's roles: "developer" is the newer name of "system".
std::vector<ChatMessage> get_messages(const json& j) {
  if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].empty())
    bad("'messages' must be a non-empty array of {role, content}");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < j["messages"].size(); ++i) {
    const json& m = j["messages"][i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content"))
      bad(fmt::format("'messages[{}]' must be an object with a string 'role' and a 'content'", i));
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";
    out.push_back({role, get_content(m, i)});
  }
  return out;
}

// Log-probabilities: completions ask with "logprobs": k (0..5 alternatives);
// chat with "logprobs": true and "top_logprobs": k (0..20). -1 = none.
int64_t get_top_logprobs(const json& j, bool chat) {
  if (!chat) return get_int(j, "logprobs", -1, 0, 5);
  const bool on = get_bool(j, "logprobs", false);
  const int64_t top = get_int(j, "top_logprobs", 0, 0, 20);
  if (!on && j.contains("top_logprobs") && !j["top_logprobs"].is_null())
    bad("'top_logprobs' needs 'logprobs': true");
  return on ? top : -1;
}

bool get_include_usage(const json& j, bool stream) {
  if (!j.contains("stream_options") || j["stream_options"].is_null()) return false;
  const json& s = j["stream_options"];
  if (!s.is_object()) bad("'stream_options' must be an object {include_usage}");
  if (!stream) bad("'stream_options' is only allowed with 'stream': true");
  return get_bool(s, "include_usage", false);
}

// A seed the request gives, or a fresh random one: without "seed" two equal
// sampled requests differ, as OpenAI's do.
uint64_t get_seed(const json& j) {
  if (j.contains("seed") && !j["seed"].is_null()) return static_cast<uint64_t>(get_int(j, "seed", 0, 0, INT64_MAX));
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return rng() >> 1;
}

// The request's "cache" object over the server's defaults. A policy that needs
// a compressor, at a budget other than the server's, needs the model's
// compressor for that budget.
CacheOptions get_cache(const json& j, const ServerOptions& o, const std::string& model_dir) {
  CacheOptions c = o.cache;
  if (!j.contains("cache") || j["cache"].is_null()) return c;
  const json& r = j["cache"];
  if (!r.is_object()) bad("'cache' must be an object {policy, budget, chunk, state, continue}");
  for (const auto& [key, value] : r.items())
    if (key != "policy" && key != "budget" && key != "chunk" && key != "state" && key != "continue")
      bad(fmt::format("'cache.{}' is not a known field", key));
  if (r.contains("policy")) {
    c.policy = get_string(r, "policy");
    const auto& names = cache_policy_names();
    if (std::find(names.begin(), names.end(), c.policy) == names.end())
      bad(fmt::format("'cache.policy': unknown policy '{}' (choose from: {})", c.policy, fmt::join(names, ", ")));
  }
  c.budget = get_int(r, "budget", c.budget, 1, o.budget_limit());
  c.chunk = get_int(r, "chunk", c.chunk, 1, 8192);
  if (c.budget != o.cache.budget) c.lococo.compressor.clear();  // the server's file fits its own budget only
  try {
    return resolve_compressor(c, model_dir);
  } catch (const std::invalid_argument&) {
    bad(fmt::format("'cache.budget': the model has no {} compressor for budget {}", c.policy, c.budget));
  }
  return c;
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body, bool chat, const ServerOptions& o,
                                           const ChatTemplate& tmpl, const std::string& model_dir) {
  const json j = parse_body(body);
  CompletionRequest r;
  r.chat = chat;
  if (chat) {
    r.chat_segments = render_chat_segments(tmpl, get_messages(j));
    for (const auto& seg : r.chat_segments) r.prompt += seg.text;
  } else {
    r.prompt = get_string(j, "prompt");
  }
  if (r.prompt.empty()) bad("'prompt' is empty");
  r.stream = get_bool(j, "stream", false);
  r.gen.stop_at_eos = !get_bool(j, "ignore_eos", false);  // llama.cpp's extension, for load tests
  r.include_usage = get_include_usage(j, r.stream);
  // max_completion_tokens is the newer name; it wins when both are given.
  r.gen.max_tokens = get_int(j, "max_completion_tokens",
                             get_int(j, "max_tokens", o.default_max_tokens, 0, o.max_tokens_limit), 0,
                             o.max_tokens_limit);
  r.n = get_int(j, "n", 1, 1, o.max_choices);
  r.gen.top_logprobs = get_top_logprobs(j, chat);
  r.gen.stop = get_stop(j);
  if (chat) r.gen.stop.insert(r.gen.stop.end(), tmpl.stop.begin(), tmpl.stop.end());
  r.gen.sampling.temperature = get_number(j, "temperature", 0.0, 0.0, 2.0);
  r.gen.sampling.top_p = get_number(j, "top_p", 1.0, 1e-6, 1.0);
  r.gen.sampling.top_k = get_int(j, "top_k", 0, 0, 1 << 20);
  r.gen.sampling.seed = get_seed(j);
  r.cache = get_cache(j, o, model_dir);
  r.gen.chunk = r.cache.chunk;
  r.cache_prompt = get_bool(j, "cache_prompt", true);
  r.return_progress = get_bool(j, "return_progress", false);
  if (j.contains("cache") && j["cache"].is_object() && j["cache"].contains("state")) {
    r.state = get_string(j["cache"], "state");
    check_state_name(r.state, "cache.state");
    if (o.slot_save_path.empty()) bad("'cache.state' needs the server to run with --slot-save-path DIR");
    r.state_continue = get_bool(j["cache"], "continue", false);
  } else if (j.contains("cache") && j["cache"].is_object() && j["cache"].contains("continue")) {
    bad("'cache.continue' needs 'cache.state'");
  }
  return r;
}

}  // namespace lococo::server_detail
