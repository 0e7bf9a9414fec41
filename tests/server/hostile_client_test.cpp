// lococo serve against clients that do not play by the rules, over raw
// loopback sockets: bodies past the limit in every framing, slow senders,
// too many connections, clients that leave, and a shutdown with a queue.
#include <atomic>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include "server/serve_process.h"
#include "test_util.h"

namespace lococo {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using testing::RawConnection;
using testing::ServeProcess;

class HostileClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { testing::tokenized_tiny_model(dir_.path()); }
  static testing::TempDir dir_;
};
testing::TempDir HostileClientTest::dir_;

std::string request_head(const std::string& headers) {
  return "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + headers + "\r\n";
}

std::string gzip(const std::string& data) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);  // 15 + 16: gzip framing
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

int64_t metric(int port, const std::string& sample) {
  httplib::Client c("127.0.0.1", port);
  auto res = c.Get("/metrics");
  if (!res) return -1;
  const size_t at = res->body.find("\n" + sample + " ");
  return at == std::string::npos ? 0 : std::stoll(res->body.substr(at + sample.size() + 2));
}

// 413 as soon as a body passes --max-body, whatever its framing; the inflated
// bytes of a gzip body count; a body with no length gets 411; a JSON body sent
// as a form (curl -d) is read as JSON; memory does not follow the bodies.
TEST_F(HostileClientTest, BodiesAreRefusedAtTheLimitWhateverTheirFraming) {
  ServeProcess server(dir_.path(), dir_ / "serve-body.log", "--max-body 1048576");
  ASSERT_GT(server.port(), 0) << "lococo serve did not start";
  const int64_t rss_before = server.rss_bytes();
  {  // chunked, endless: the 413 comes while the client is still sending
    RawConnection c(server.port());
    ASSERT_TRUE(c.send_raw(request_head("Transfer-Encoding: chunked\r\n")));
    std::atomic<bool> answered{false};
    std::thread reader([&] { answered = c.read_until("--max-body"); });
    const std::string chunk = "10000\r\n" + std::string(0x10000, ' ') + "\r\n";  // 64 KiB
    int sent = 0;
    while (sent < 1024 && !answered && c.send_raw(chunk)) ++sent;
    reader.join();
    EXPECT_TRUE(answered) << c.received();
    EXPECT_LT(sent, 512) << "the server read on long after the limit";  // 32 MiB of 64
    EXPECT_NE(c.received().find(" 413 "), std::string::npos) << c.received();
  }
  {  // 64 MiB of JSON-ish bytes in 64 KiB of gzip
    const std::string packed = gzip(std::string(64 << 20, ' '));
    ASSERT_LT(packed.size(), size_t{1} << 20);
    RawConnection c(server.port());
    ASSERT_TRUE(c.send_raw(request_head("Content-Encoding: gzip\r\nContent-Length: " + std::to_string(packed.size()) +
                                        "\r\n") + packed));
    EXPECT_TRUE(c.read_until(" 413 ")) << c.received();
  }
  {  // a length past the limit: refused before one byte of the body
    RawConnection c(server.port());
    ASSERT_TRUE(c.send_raw(request_head("Content-Length: 10000000000\r\n")));
    EXPECT_TRUE(c.read_until(" 413 ")) << c.received();
  }
  {  // neither a length nor chunks
    RawConnection c(server.port());
    ASSERT_TRUE(c.send_raw(request_head("")));
    EXPECT_TRUE(c.read_until(" 411 ")) << c.received();
  }
  {  // a transfer coding other than chunked
    RawConnection c(server.port());
    ASSERT_TRUE(c.send_raw(request_head("Transfer-Encoding: gzip, chunked\r\n")));
    EXPECT_TRUE(c.read_until(" 501 ")) << c.received();
  }
  {  // curl -d: a 20 KiB JSON body under the form content type
    httplib::Client c("127.0.0.1", server.port());
    c.set_read_timeout(60, 0);
    const json request = {{"prompt", std::string(20000, 'a') + " The sea"}, {"max_tokens", 2}};
    auto res = c.Post("/v1/completions", request.dump(), "application/x-www-form-urlencoded");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
  }
  EXPECT_LT(server.rss_bytes() - rss_before, 48 << 20);
}

// With a key, an unauthenticated request is answered 401 before its body is read.
TEST_F(HostileClientTest, TheKeyIsCheckedBeforeTheBodyIsRead) {
  ServeProcess server(dir_.path(), dir_ / "serve-key.log", "--api-key sesame");
  ASSERT_GT(server.port(), 0) << "lococo serve did not start";
  RawConnection c(server.port());
  ASSERT_TRUE(c.send_raw(request_head("Content-Length: 500000000\r\n")));  // and no body
  EXPECT_TRUE(c.read_until(" 401 ")) << c.received();
  EXPECT_TRUE(c.closed_within(milliseconds(5000)));  // no keep-alive over an unread body
}

// Forty connections sending a header byte now and then: /health still
// answers, and each slow connection is closed at its header deadline.
TEST_F(HostileClientTest, SlowClientsCannotTakeTheServer) {
  ServeProcess server(dir_.path(), dir_ / "serve-slow.log", "--parallel 1 --queue 2 --header-timeout 2");
  ASSERT_GT(server.port(), 0) << "lococo serve did not start";
  std::vector<std::unique_ptr<RawConnection>> slow;
  for (int i = 0; i < 40; ++i) {
    slow.push_back(std::make_unique<RawConnection>(server.port()));
    ASSERT_TRUE(slow.back()->send_raw("POST /v1/completions HTTP/1.1\r\nX-Slow: "));
  }
  httplib::Client health("127.0.0.1", server.port());
  health.set_read_timeout(5, 0);
  health.set_connection_timeout(5, 0);
  for (int round = 0; round < 6; ++round) {  // 3 s of dribbling, past the 2 s deadline
    for (auto& c : slow) c->send_raw("a");
    auto res = health.Get("/health");
    ASSERT_TRUE(res) << "round " << round << ": " << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 200);
    std::this_thread::sleep_for(milliseconds(500));
  }
  int closed = 0;
  for (auto& c : slow) closed += c->closed_within(milliseconds(3000)) ? 1 : 0;
  EXPECT_EQ(closed, 40);
}

// Past --max-connections a connection is answered 503 at once.
TEST_F(HostileClientTest, ConnectionsPastTheCapGet503) {
  ServeProcess server(dir_.path(), dir_ / "serve-cap.log", "--max-connections 8");
  ASSERT_GT(server.port(), 0) << "lococo serve did not start";
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 8; ++i) idle.push_back(std::make_unique<RawConnection>(server.port()));
  std::this_thread::sleep_for(milliseconds(300));
  RawConnection extra(server.port());
  EXPECT_TRUE(extra.read_until(" 503 ")) << extra.received();
  idle.clear();
  httplib::Client c("127.0.0.1", server.port());
  int status = 0;
  for (int i = 0; i < 100 && status != 200; ++i) {
    if (auto res = c.Get("/health")) status = res->status;
    if (status != 200) std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_EQ(status, 200);
}

// A running non-streaming request and a queued one whose clients hang up
// stop: the next request is served at once and few tokens were generated.
TEST_F(HostileClientTest, RequestsWhoseClientsLeftStopCosting) {
  ServeProcess server(dir_.path(), dir_ / "serve-gone.log", "--parallel 1 --queue 4 --max-tokens-limit 1000000");
  ASSERT_GT(server.port(), 0) << "lococo serve did not start";
  const std::string endless = R"({"prompt": "Call me", "max_tokens": 1000000, "ignore_eos": true})";
  {
    RawConnection running(server.port()), queued(server.port());
    ASSERT_TRUE(running.post("/v1/completions", endless));
    std::this_thread::sleep_for(milliseconds(300));
    ASSERT_TRUE(queued.post("/v1/completions", endless));
    std::this_thread::sleep_for(milliseconds(300));
  }  // both hang up
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(30, 0);
  auto res = c.Post("/v1/completions", R"({"prompt": "hi", "max_tokens": 2})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_LT(metric(server.port(), "lococo_generated_tokens_total"), 100000);
  EXPECT_EQ(metric(server.port(), R"(lococo_requests_total{endpoint="completions",code="499"})"), 2);
}

// SIGTERM: the running request finishes (here at its --timeout), the queued
// one is answered 503, and the process exits 0.
TEST_F(HostileClientTest, ShutdownFinishesRunningAndRefusesQueued) {
  ServeProcess server(dir_.path(), dir_ / "serve-stop.log", "--parallel 1 --queue 2 --timeout 3 --max-tokens-limit 1000000");
  ASSERT_GT(server.port(), 0) << "lococo serve did not start";
  RawConnection running(server.port()), queued(server.port());
  ASSERT_TRUE(running.post("/v1/completions",
                           R"({"prompt": "Call me", "max_tokens": 1000000, "ignore_eos": true, "stream": true})"));
  ASSERT_TRUE(running.read_until("data: "));
  ASSERT_TRUE(queued.post("/v1/completions", R"({"prompt": "Call me", "max_tokens": 4, "stream": true})"));
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(server.terminate(milliseconds(15000)), 0);
  EXPECT_TRUE(queued.read_until("shutting down")) << queued.received();
  EXPECT_NE(queued.received().find(" 503 "), std::string::npos);
  EXPECT_TRUE(running.read_until("data: [DONE]"));
  EXPECT_NE(running.received().find(R"("finish_reason":"length")"), std::string::npos) << "timeout maps to length";
}

// A second server on a port in use fails to start instead of sharing it.
TEST_F(HostileClientTest, ASecondServerOnTheSamePortIsRefused) {
  ServeProcess first(dir_.path(), dir_ / "serve-first.log", "");
  ASSERT_GT(first.port(), 0) << "lococo serve did not start";
  ServeProcess second(dir_.path(), dir_ / "serve-second.log", "", first.port());
  EXPECT_EQ(second.port(), 0);
  EXPECT_NE(second.exit_status(milliseconds(10000)), 0);
}

}  // namespace
}  // namespace lococo
