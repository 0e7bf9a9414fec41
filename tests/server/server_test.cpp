// lococo serve over loopback: OpenAI-shaped replies (JSON and server-sent
// events) equal a direct generate(); bad requests, keys and overload get the
// right status; disconnects free their slot; memory stays flat under load.
#include <atomic>
#include <fstream>
#include <future>
#include <regex>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "lococo/tokenizer/chat_template.h"
#include "lococo/generate/generate.h"
#include "lococo/kv/registry.h"
#include "lococo/server/server.h"
#include "server/serve_process.h"
#include "test_util.h"

namespace lococo {
namespace {

using nlohmann::json;
using testing::RawConnection;
using testing::ServeProcess;

// A server on an ephemeral loopback port, serving from a background thread.
class RunningServer {
 public:
  RunningServer(const LoadedModel& model, ServerOptions o) : server_(model, std::move(o)) {
    port_ = server_.bind();
    thread_ = std::thread([this] { server_.listen(); });
  }
  ~RunningServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }

 private:
  Server server_;
  int port_ = 0;
  std::thread thread_;
};

// The `data:` payloads of a server-sent-events body, in order.
std::vector<std::string> sse_payloads(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return out;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = new LoadedModel(testing::tokenized_tiny_model(dir_.path())); }
  static void TearDownTestSuite() { delete model_; }

  ServerOptions options() const {
    ServerOptions o;
    o.port = 0;
    o.cache.policy = "h2o";
    o.cache.budget = 32;
    o.cache.chunk = 16;
    return o;
  }
  // What the server should answer: generate() on the same model and cache.
  std::string direct(const std::string& prompt, int64_t max_tokens, std::vector<std::string> stop = {}) const {
    auto cache = make_cache(model_->model->config(), options().cache);
    GenerateOptions g;
    g.max_tokens = max_tokens;
    g.chunk = options().cache.chunk;
    g.stop = std::move(stop);
    const std::string text = generate(*model_->model, *model_->tokenizer, *cache, model_->tokenizer->encode(prompt), g).text;
    // as the server sends it: invalid UTF-8 (byte-fallback pieces of a random model) replaced
    return json::parse(json(text).dump(-1, ' ', false, json::error_handler_t::replace)).get<std::string>();
  }

  static testing::TempDir dir_;
  static LoadedModel* model_;
};
testing::TempDir ServerTest::dir_;
LoadedModel* ServerTest::model_ = nullptr;

TEST_F(ServerTest, CompletionMatchesDirectGeneration) {
  RunningServer s(*model_, options());
  auto res = s.client().Post("/v1/completions", R"({"prompt": "The sea was calm", "max_tokens": 12})", "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], direct("The sea was calm", 12));
  EXPECT_LE(j["usage"]["completion_tokens"].get<int>(), 12);
  EXPECT_EQ(j["usage"]["total_tokens"], j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());
  EXPECT_NE(j["lococo"]["cache"].get<std::string>().find("h2o"), std::string::npos);
}

TEST_F(ServerTest, StreamingSendsTheSameTextAsEvents) {
  RunningServer s(*model_, options());
  auto res = s.client().Post("/v1/completions", R"({"prompt": "The sea was calm", "max_tokens": 12, "stream": true})",
                             "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  const auto events = sse_payloads(res->body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) text += json::parse(events[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, direct("The sea was calm", 12));
  EXPECT_FALSE(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"].is_null());
}

TEST_F(ServerTest, ChatUsesTheTemplateNonStreamingAndStreaming) {
  RunningServer s(*model_, options());
  const std::string body = R"({"messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Tell me of whales."}], "max_tokens": 10)";
  const auto tmpl = chat_template("plain");
  const std::string want = direct(render_chat(tmpl, {{"system", "Be brief."}, {"user", "Tell me of whales."}}), 10, tmpl.stop);
  auto res = s.client().Post("/v1/chat/completions", body + "}", "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], want);

  auto st = s.client().Post("/v1/chat/completions", body + R"(, "stream": true})", "application/json");
  ASSERT_TRUE(st);
  const auto events = sse_payloads(st->body);
  ASSERT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    if (e["choices"][0]["delta"].contains("content")) text += e["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(text, want);
  EXPECT_EQ(json::parse(events[0])["choices"][0]["delta"]["role"], "assistant");
}

TEST_F(ServerTest, BadRequestsGet400WithJsonErrors) {
  RunningServer s(*model_, options());
  const std::vector<std::string> bad = {
      R"({"prompt": "hi", "max_tokens": 4)",                   // malformed JSON
      R"(["prompt"])",                                         // not an object
      R"({"max_tokens": 4})",                                  // no prompt
      R"({"prompt": 7})",                                      // wrong type
      R"({"prompt": "hi", "max_tokens": "ten"})",              // wrong type
      R"({"prompt": "hi", "max_tokens": -1})",                 // negative
      R"({"prompt": "hi", "max_tokens": 100000000})",          // huge
      R"({"prompt": "hi", "temperature": 9})",                 // out of range
      R"({"prompt": "hi", "cache": {"policy": "magic"}})",     // unknown policy
      R"({"prompt": "hi", "cache": {"budget": 0}})",           // bad budget
      R"({"prompt": ""})",                                     // empty prompt
      R"({"prompt": "hi", "max_tokens": 1e300})",              // beyond int64 (no undefined cast)
      R"({"prompt": "hi", "seed": 1e19})",                     // beyond int64 as a float
      R"({"prompt": "hi", "seed": 18446744073709551615})",     // beyond int64 as an unsigned integer
      R"({"prompt": "hi", "max_tokens": 2.5})",                // not an integer
      R"({"prompt": "hi", "n": 0})",                           // below the range as an unsigned integer
      R"({"prompt": "hi", "n": 1000})",                        // more choices than --max-choices
      R"({"prompt": "hi", "logprobs": 6})",                    // completions allow 0-5 alternatives
      R"({"prompt": "hi", "stream_options": {"include_usage": true}})",  // stream_options without stream
  };
  for (const auto& body : bad) {
    auto res = s.client().Post("/v1/completions", body, "application/json");
    ASSERT_TRUE(res) << body;
    EXPECT_EQ(res->status, 400) << body;
    const json j = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << res->body;
    EXPECT_EQ(j["error"]["code"], 400);
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
  }
  for (const std::string body : {
           R"({"messages": [{"role": "robot", "content": "x"}]})",
           R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})",
           R"({"messages": [{"role": "user", "content": 7}]})",
           R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",  // without logprobs: true
       })
    EXPECT_EQ(s.client().Post("/v1/chat/completions", body, "application/json")->status, 400) << body;
  EXPECT_EQ(s.client().Get("/nowhere")->status, 404);
}

TEST_F(ServerTest, ChoicesLogprobsAndUsageFollowTheRequest) {
  RunningServer s(*model_, options());
  auto res = s.client().Post("/v1/completions",
                             R"({"prompt": "The sea was calm", "max_tokens": 6, "n": 3, "logprobs": 2})",
                             "application/json");
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  ASSERT_EQ(j["choices"].size(), 3u);
  int64_t tokens = 0;
  for (int i = 0; i < 3; ++i) {
    const json& c = j["choices"][i];
    EXPECT_EQ(c["index"], i);
    EXPECT_EQ(c["text"], direct("The sea was calm", 6));  // greedy: every choice the same
    const json& lp = c["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), lp["token_logprobs"].size());
    for (size_t k = 0; k < lp["tokens"].size(); ++k) {
      // {piece: logprob}: two alternatives whose pieces read the same share a key
      EXPECT_GE(lp["top_logprobs"][k].size(), 1u);
      EXPECT_LE(lp["top_logprobs"][k].size(), 2u);
      EXPECT_LE(lp["token_logprobs"][k].get<double>(), 0.0);
    }
    tokens += static_cast<int64_t>(lp["tokens"].size());
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], tokens);
  // A streamed chat with include_usage ends with a chunk of no choices and the usage.
  auto chat = s.client().Post("/v1/chat/completions",
                              R"({"messages": [{"role": "developer", "content": "Be brief."},
                                               {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                                  "max_completion_tokens": 3, "stream": true,
                                  "stream_options": {"include_usage": true}})",
                              "application/json");
  ASSERT_EQ(chat->status, 200) << chat->body;
  const auto events = sse_payloads(chat->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_LE(usage["usage"]["completion_tokens"].get<int64_t>(), 3);  // max_completion_tokens holds
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const json& reason = json::parse(events[i])["choices"][0]["finish_reason"];
    EXPECT_TRUE(reason.is_null() || reason == "stop" || reason == "length") << reason;
  }
}

TEST_F(ServerTest, TokenizeDetokenizePropsSlotsAndCors) {
  ServerOptions o = options();
  o.cors_origin = "https://app.example";
  RunningServer s(*model_, o);
  auto tok = s.client().Post("/tokenize", R"({"content": "The whale", "with_pieces": true})", "application/json");
  ASSERT_EQ(tok->status, 200) << tok->body;
  EXPECT_EQ(tok->get_header_value("Access-Control-Allow-Origin"), "https://app.example");
  json ids = json::array();
  std::string pieces;
  const json reply = json::parse(tok->body);
  for (const auto& t : reply["tokens"]) {
    ids.push_back(t["id"]);
    pieces += t["piece"].get<std::string>();
  }
  EXPECT_EQ(ids.get<std::vector<int64_t>>(), model_->tokenizer->encode("The whale"));
  auto detok = s.client().Post("/detokenize", json{{"tokens", ids}}.dump(), "application/json");
  EXPECT_EQ(json::parse(detok->body)["content"], model_->tokenizer->decode(ids.get<std::vector<int64_t>>()));
  EXPECT_EQ(s.client().Post("/detokenize", R"({"tokens": [-1]})", "application/json")->status, 400);
  EXPECT_EQ(s.client().Post("/tokenize", R"({"content": 3})", "application/json")->status, 400);
  EXPECT_EQ(json::parse(s.client().Get("/props")->body)["total_slots"], o.parallel);
  const json slots = json::parse(s.client().Get("/slots")->body);
  ASSERT_EQ(slots.size(), static_cast<size_t>(o.parallel));
  EXPECT_EQ(slots[0]["is_processing"], false);
  auto preflight = s.client().Options("/v1/completions");
  EXPECT_EQ(preflight->status, 204);
  EXPECT_NE(preflight->get_header_value("Access-Control-Allow-Headers").find("Authorization"), std::string::npos);
  RunningServer plain(*model_, options());  // CORS is opt-in
  EXPECT_FALSE(plain.client().Get("/health")->has_header("Access-Control-Allow-Origin"));
}

TEST_F(ServerTest, ApiKeyIsRequiredWhenSet) {
  ServerOptions o = options();
  o.api_key = "sesame";
  RunningServer s(*model_, o);
  const std::string body = R"({"prompt": "hi", "max_tokens": 2})";
  EXPECT_EQ(s.client().Post("/v1/completions", body, "application/json")->status, 401);
  auto wrong = s.client();
  wrong.set_bearer_token_auth("sesamf");
  EXPECT_EQ(wrong.Post("/v1/completions", body, "application/json")->status, 401);
  EXPECT_EQ(wrong.Get("/v1/models")->status, 401);
  auto right = s.client();
  right.set_bearer_token_auth("sesame");
  EXPECT_EQ(right.Post("/v1/completions", body, "application/json")->status, 200);
  EXPECT_EQ(json::parse(right.Get("/v1/models")->body)["data"][0]["id"], "lococo");
  EXPECT_EQ(s.client().Get("/health")->status, 200);  // health stays open for probes
  EXPECT_EQ(s.client().Get("/metrics")->status, 401);  // metrics need the key unless --metrics-open
  EXPECT_EQ(right.Get("/metrics")->status, 200);
  // The scheme is case-insensitive (RFC 7235), the token is not.
  httplib::Headers lower = {{"Authorization", "bearer sesame"}}, upper = {{"Authorization", "BEARER sesame"}};
  EXPECT_EQ(s.client().Get("/v1/models", lower)->status, 200);
  EXPECT_EQ(s.client().Get("/v1/models", upper)->status, 200);
  httplib::Headers token_case = {{"Authorization", "Bearer SESAME"}};
  EXPECT_EQ(s.client().Get("/v1/models", token_case)->status, 401);
  o.metrics_open = true;
  RunningServer open(*model_, o);
  EXPECT_EQ(open.client().Get("/metrics")->status, 200);
}

// A counter of /metrics.
int64_t metric(const RunningServer& s, const std::string& name) {
  const std::string body = s.client().Get("/metrics")->body;
  std::smatch m;
  if (!std::regex_search(body, m, std::regex("\n" + name + " ([0-9]+)"))) return -1;
  return std::stoll(m[1]);
}

// A prompt of several chunks (the test cache reads 16 tokens per chunk).
std::string long_prompt(const std::string& tail = "") {
  std::string p;
  for (int i = 0; i < 8; ++i) p += "The whale swam past the ship while the sailors watched the sea. ";
  return p + tail;
}

TEST_F(ServerTest, PromptReuseReadsOnlyTheNewTokensAndChangesNoResult) {
  RunningServer s(*model_, options());
  const std::string first = long_prompt(), second = long_prompt("Then the captain spoke");
  auto a = s.client().Post("/v1/completions", json{{"prompt", first}, {"max_tokens", 6}}.dump(), "application/json");
  ASSERT_EQ(a->status, 200) << a->body;
  EXPECT_EQ(json::parse(a->body)["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  const int64_t read_before = metric(s, "lococo_prompt_tokens_read_total");
  auto b = s.client().Post("/v1/completions", json{{"prompt", second}, {"max_tokens", 6}}.dump(), "application/json");
  ASSERT_EQ(b->status, 200) << b->body;
  const json jb = json::parse(b->body);
  // The kept state ends at the first prompt's last whole chunk (BOS counted).
  const int64_t first_tokens = static_cast<int64_t>(model_->tokenizer->encode(first).size()) + 1;
  const int64_t chunk = options().cache.chunk;
  const int64_t reused = jb["usage"]["prompt_tokens_details"]["cached_tokens"];
  EXPECT_EQ(reused, first_tokens / chunk * chunk);
  EXPECT_GT(reused, 4 * chunk);
  EXPECT_EQ(jb["lococo"]["prompt_tokens_reused"], reused);
  EXPECT_EQ(metric(s, "lococo_prompt_tokens_reused_total"), reused);
  EXPECT_EQ(metric(s, "lococo_prompt_tokens_read_total") - read_before,
            jb["usage"]["prompt_tokens"].get<int64_t>() - reused);  // only the new tokens were read
  // Read in the same chunks as a fresh read: the same text as generate() from scratch.
  EXPECT_EQ(jb["choices"][0]["text"], direct(second, 6));
  // The same prompt again reuses all of its whole chunks; cache_prompt: false reuses nothing.
  auto again = s.client().Post("/v1/completions", json{{"prompt", second}, {"max_tokens", 6}}.dump(), "application/json");
  EXPECT_EQ(json::parse(again->body)["choices"][0]["text"], direct(second, 6));
  EXPECT_GE(json::parse(again->body)["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), reused);
  auto off = s.client().Post("/v1/completions",
                             json{{"prompt", second}, {"max_tokens", 6}, {"cache_prompt", false}}.dump(),
                             "application/json");
  EXPECT_EQ(json::parse(off->body)["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_GT(json::parse(s.client().Get("/slots")->body)[0]["n_prompt_tokens_cached"].get<int64_t>(), 0);
  // Another policy's request does not reuse an h2o state.
  auto other = s.client().Post("/v1/completions",
                               json{{"prompt", second}, {"max_tokens", 2}, {"cache", {{"policy", "streaming"}}}}.dump(),
                               "application/json");
  EXPECT_EQ(json::parse(other->body)["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

TEST_F(ServerTest, SlotFilesAndNamedStatesSkipTheDocument) {
  testing::TempDir states;
  ServerOptions o = options();
  o.slot_save_path = states.path().string();
  RunningServer s(*model_, o);
  auto post = [&](const std::string& path, const json& body) {
    return s.client().Post(path, body.dump(), "application/json");
  };
  const std::string doc = long_prompt(), question = long_prompt("Who watched the sea?");
  // A named state: the first request reads the document and keeps it as a file ...
  auto first = post("/v1/completions", {{"prompt", doc}, {"max_tokens", 1}, {"cache", {{"state", "book"}}}});
  ASSERT_EQ(first->status, 200) << first->body;
  EXPECT_TRUE(std::filesystem::exists(states / "book"));
  // ... and a later one that begins with it, with the slot's own state off, reads only the question.
  auto ask = post("/v1/completions", {{"prompt", question}, {"max_tokens", 6}, {"cache_prompt", false},
                                      {"cache", {{"state", "book"}}}});
  ASSERT_EQ(ask->status, 200) << ask->body;
  const json ja = json::parse(ask->body);
  EXPECT_GT(ja["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), 4 * o.cache.chunk);
  EXPECT_EQ(ja["choices"][0]["text"], direct(question, 6));
  // "continue": the prompt is read after the state's text (here: the document's whole chunks).
  auto cont = post("/v1/completions", {{"prompt", " Who watched the sea?"}, {"max_tokens", 6},
                                       {"cache", {{"state", "book"}, {"continue", true}}}});
  ASSERT_EQ(cont->status, 200) << cont->body;
  {
    std::vector<int64_t> read = model_->tokenizer->encode(doc, /*add_bos=*/true);
    read.resize(read.size() / o.cache.chunk * o.cache.chunk);
    auto cache = make_cache(model_->model->config(), o.cache);
    prefill(*model_->model, *cache, read, o.cache.chunk);
    const auto logits = prefill(*model_->model, *cache, model_->tokenizer->encode(" Who watched the sea?"), o.cache.chunk);
    GenerateOptions g;
    g.max_tokens = 6;
    const std::string text = continue_generation(*model_->model, *model_->tokenizer, *cache, logits, g).text;
    EXPECT_EQ(json::parse(cont->body)["choices"][0]["text"],
              json::parse(json(text).dump(-1, ' ', false, json::error_handler_t::replace)));
    EXPECT_EQ(json::parse(cont->body)["usage"]["prompt_tokens_details"]["cached_tokens"],
              static_cast<int64_t>(read.size()));
  }
  EXPECT_EQ(post("/v1/completions", {{"prompt", "x"}, {"cache", {{"state", "nobook"}, {"continue", true}}}})->status, 404);
  EXPECT_EQ(post("/v1/completions", {{"prompt", "x"}, {"cache", {{"continue", true}}}})->status, 400);
  // A state made under other cache options is refused, naming the field.
  auto other = post("/v1/completions", {{"prompt", question}, {"cache", {{"state", "book"}, {"budget", 64}}}});
  EXPECT_EQ(other->status, 400);
  EXPECT_NE(other->body.find("budget"), std::string::npos) << other->body;
  // Slot files: save, erase, restore.
  auto saved = post("/slots/0?action=save", {{"filename", "slot0.state"}});
  ASSERT_EQ(saved->status, 200) << saved->body;
  EXPECT_GT(json::parse(saved->body)["n_saved"].get<int64_t>(), 0);
  EXPECT_TRUE(std::filesystem::exists(states / "slot0.state"));
  EXPECT_GT(json::parse(post("/slots/0?action=erase", json::object())->body)["n_erased"].get<int64_t>(), 0);
  EXPECT_EQ(json::parse(s.client().Get("/slots")->body)[0]["n_prompt_tokens_cached"], 0);
  auto restored = post("/slots/0?action=restore", {{"filename", "slot0.state"}});
  ASSERT_EQ(restored->status, 200) << restored->body;
  auto again = post("/v1/completions", {{"prompt", question}, {"max_tokens", 6}});
  EXPECT_GT(json::parse(again->body)["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(json::parse(again->body)["choices"][0]["text"], direct(question, 6));
  // File names cannot leave the directory; missing, corrupt and unknown things are client errors.
  for (const std::string name : {"../escape", "a/b", ".hidden", "", "x\ny"})
    EXPECT_EQ(post("/slots/0?action=save", {{"filename", name}})->status, 400) << name;
  EXPECT_EQ(post("/v1/completions", {{"prompt", "hi"}, {"cache", {{"state", "../../etc/passwd"}}}})->status, 400);
  EXPECT_EQ(post("/slots/0?action=restore", {{"filename", "missing"}})->status, 404);
  std::ofstream(states / "garbage") << "not a state";
  EXPECT_EQ(post("/slots/0?action=restore", {{"filename", "garbage"}})->status, 400);
  EXPECT_EQ(post("/v1/completions", {{"prompt", "hi"}, {"cache", {{"state", "garbage"}}}})->status, 400);
  EXPECT_EQ(post("/slots/7?action=save", {{"filename", "x"}})->status, 400);
  EXPECT_EQ(post("/slots/0?action=fly", {{"filename", "x"}})->status, 400);
  EXPECT_FALSE(std::filesystem::exists(states.path().parent_path() / "escape"));
  RunningServer no_dir(*model_, options());  // without --slot-save-path there are no files
  EXPECT_EQ(no_dir.client().Post("/slots/0?action=save", R"({"filename": "x"})", "application/json")->status, 400);
  EXPECT_EQ(no_dir.client().Post("/v1/completions", R"({"prompt": "hi", "cache": {"state": "x"}})",
                                 "application/json")->status, 400);
}

TEST_F(ServerTest, StreamedPromptReadingReportsProgress) {
  RunningServer s(*model_, options());
  const std::string prompt = long_prompt("And then");
  auto res = s.client().Post("/v1/completions",
                             json{{"prompt", prompt}, {"max_tokens", 4}, {"stream", true}, {"return_progress", true}}.dump(),
                             "application/json");
  ASSERT_EQ(res->status, 200);
  const auto events = sse_payloads(res->body);
  ASSERT_GE(events.size(), 3u);
  // Progress events first (at least the last, with the whole prompt read), growing.
  const int64_t total = static_cast<int64_t>(model_->tokenizer->encode(prompt).size()) + 1;
  size_t i = 0;
  int64_t processed = 0;
  for (; i < events.size() && json::parse(events[i]).contains("prompt_progress"); ++i) {
    const json p = json::parse(events[i]);
    EXPECT_TRUE(p["choices"].empty());
    EXPECT_EQ(p["prompt_progress"]["total"], total);
    EXPECT_GT(p["prompt_progress"]["processed"].get<int64_t>(), processed);
    processed = p["prompt_progress"]["processed"];
  }
  ASSERT_GE(i, 1u) << events[0];
  EXPECT_EQ(processed, total);
  std::string text;
  for (; i + 1 < events.size(); ++i) text += json::parse(events[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, direct(prompt, 4));
}

// --max-cache-bytes bounds what a request may ask, under every policy: a
// cache that could never fit is refused by name before anything is allocated.
TEST_F(ServerTest, RequestsThatCouldNeverFitTheCacheBytesAreRefused) {
  ServerOptions o = options();
  o.max_cache_bytes = 4 * planned_cache_bytes(model_->model->config(), o.cache, 0);
  RunningServer s(*model_, o);
  auto c = s.client();
  for (const char* body : {R"({"prompt": "hi", "max_tokens": 1, "cache": {"policy": "streaming", "budget": 65536, "chunk": 8192}})",
                           R"({"prompt": "hi", "max_tokens": 500, "cache": {"policy": "full"}})"}) {
    auto res = c.Post("/v1/completions", body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << body;
    EXPECT_NE(res->body.find("--max-cache-bytes"), std::string::npos) << res->body;
  }
  auto ok = c.Post("/v1/completions", R"({"prompt": "The sea was calm", "max_tokens": 4})", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(json::parse(ok->body)["choices"][0]["text"], direct("The sea was calm", 4));
}

// One slot, no queue: a long streaming request holds the slot, so another
// gets 503; when its client hangs up, the slot frees long before the
// generation would have ended, and the next request is served.
TEST_F(ServerTest, FullServerAnswers503AndADisconnectFreesTheSlot) {
  ServeProcess server(dir_.path(), dir_ / "serve-503.log", "--parallel 1 --queue 0 --max-tokens-limit 1000000");
  ASSERT_GT(server.port(), 0) << "lococo serve did not start";
  httplib::Client c("127.0.0.1", server.port());
  {
    RawConnection holder(server.port());
    ASSERT_TRUE(holder.post("/v1/completions",
                            R"({"prompt": "Call me", "max_tokens": 1000000, "ignore_eos": true, "stream": true})"));
    ASSERT_TRUE(holder.read_until("data: ")) << "the holding request did not stream";
    auto busy = c.Post("/v1/completions", R"({"prompt": "hi", "max_tokens": 2})", "application/json");
    ASSERT_TRUE(busy);
    EXPECT_EQ(busy->status, 503);
    EXPECT_EQ(json::parse(busy->body)["error"]["code"], 503);
    EXPECT_EQ(busy->get_header_value("Retry-After"), "1");
  }  // the holder hangs up here
  int status = 0;
  for (int i = 0; i < 500 && status != 200; ++i) {
    status = c.Post("/v1/completions", R"({"prompt": "hi", "max_tokens": 2})", "application/json")->status;
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(status, 200);
  const std::string metrics = c.Get("/metrics")->body;
  const std::string sample = "\nlococo_generated_tokens_total ";
  const size_t at = metrics.find(sample);
  ASSERT_NE(at, std::string::npos) << metrics;
  EXPECT_LT(std::stoll(metrics.substr(at + sample.size())), 1000000);  // cancelled, not run to the end
}

TEST_F(ServerTest, FiftyConcurrentRequestsCompleteWithFlatMemory) {
  const std::vector<std::string> prompts = {"It was a dark", "The whale", "Call me Ishmael.", "Some years ago"};
  std::vector<std::string> want;
  for (const auto& p : prompts) want.push_back(direct(p, 8));
  ServeProcess server(dir_.path(), dir_ / "serve.log", "--parallel 4 --queue 64");
  ASSERT_GT(server.port(), 0) << "lococo serve did not start";
  // Its thread settings came from a single restart: all of them at once.
  const std::string env = server.environment();
  for (const char* var : {"OMP_WAIT_POLICY=PASSIVE", "OMP_NUM_THREADS=", "OPENBLAS_NUM_THREADS=", "LOCOCO_RESTARTED=1"})
    EXPECT_NE(env.find(std::string(1, '\0') + var), std::string::npos) << var;
  auto wave = [&] {
    std::vector<int> status(50, 0);
    std::vector<std::string> body(50);
    std::vector<std::thread> clients;
    for (int i = 0; i < 50; ++i)
      clients.emplace_back([&, i] {
        httplib::Client c("127.0.0.1", server.port());
        c.set_read_timeout(120, 0);
        const json request = {{"prompt", prompts[i % prompts.size()]}, {"max_tokens", 8}};
        const auto t0 = std::chrono::steady_clock::now();
        if (auto res = c.Post("/v1/completions", request.dump(), "application/json")) {
          status[i] = res->status;
          body[i] = res->body;
        } else {
          const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
          body[i] = "no response after " + std::to_string(ms.count()) + " ms: " + httplib::to_string(res.error());
        }
      });
    for (auto& t : clients) t.join();
    for (int i = 0; i < 50; ++i) {
      ASSERT_EQ(status[i], 200) << body[i];
      EXPECT_EQ(json::parse(body[i])["choices"][0]["text"], want[i % prompts.size()]);
    }
  };
  wave();
  const int64_t after_first = server.rss_bytes();
  wave();
  wave();
  EXPECT_LT(server.rss_bytes() - after_first, 32 << 20);  // no growth per request
  httplib::Client c("127.0.0.1", server.port());
  auto reply = c.Get("/metrics");
  ASSERT_TRUE(reply) << httplib::to_string(reply.error());
  const std::string metrics = reply->body;
  EXPECT_NE(metrics.find("lococo_requests_total{endpoint=\"completions\",code=\"200\"} 150"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("lococo_cache_bytes 0"), std::string::npos);
}

}  // namespace
}  // namespace lococo
