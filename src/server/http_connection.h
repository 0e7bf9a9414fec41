// The connection layer under the server's routes.
//
// Debian 12's cpp-httplib (0.11) bounds each read of a request, not the
// request: a client sending a header byte every few seconds keeps its
// connection for ever, and the fixed thread pool it gives connections is then
// taken by a few dozen such clients, /health included. It lets a subclass
// handle every accepted socket itself (process_and_close_socket, the hook its
// own TLS server uses), so that is where this layer sits: httplib still parses
// requests and routes them, but reads through a stream that stops at the
// request's deadline; every open connection has its own thread, up to a cap
// beyond which connections are answered 503 and closed; and the handler
// running on a connection can see it (Connection::current()), to notice a
// client that left or to close after refusing a body it did not read.
// Writing our own HTTP parser instead would repeat what httplib does well.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>

#include <httplib.h>

namespace lococo::server_detail {

struct ConnectionLimits {
  int max_connections = 512;          // open connections; more are answered 503 and closed at once
  double header_seconds = 10;         // a request's line and headers must arrive within this
  double body_seconds = 60;           // its body within this once the handler starts reading it
  double idle_seconds = 5;            // a kept-alive connection waits this long for its next request
  double write_seconds = 30;          // a reply write that cannot progress for this long fails
  int requests_per_connection = 100;  // then the connection closes
};

// The connection a request arrived on, as its handler sees it.
class Connection {
 public:
  using Clock = std::chrono::steady_clock;
  Connection(int fd, const ConnectionLimits& limits) : fd_(fd), limits_(limits) {}

  // On a thread handling a request: its connection (nullptr elsewhere).
  static Connection* current();

  // The client hung up or reset the connection (checked without waiting).
  bool peer_gone() const;
  // No keep-alive after this reply (the rest of the request was not read).
  void close_after_reply() { close_after_reply_ = true; }
  // The body's time starts now, instead of the headers' deadline.
  void start_body() { deadline_ = Clock::now() + seconds(limits_.body_seconds); }
  // The current request's time to arrive (headers, or body) has run out.
  bool past_deadline() const { return Clock::now() >= deadline_; }

 private:
  friend class ConnectionStream;
  friend class GuardedHttpServer;
  static Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }
  // Waits for `events` on the socket until `until`; false when it did not come.
  bool wait(short events, Clock::time_point until) const;
  bool has_buffered() const { return begin_ < end_; }

  const int fd_;
  const ConnectionLimits& limits_;
  Clock::time_point deadline_{};   // reads of the current request end here
  bool close_after_reply_ = false;
  char buffer_[16384];             // bytes received, not yet handed to httplib: [begin_, end_)
  size_t begin_ = 0, end_ = 0;
};

// httplib::Server with the connection handling above.
class GuardedHttpServer : public httplib::Server {
 public:
  explicit GuardedHttpServer(ConnectionLimits limits);
  int open_connections() const { return open_.load(); }

 private:
  bool process_and_close_socket(socket_t sock) override;
  void serve_connection(int fd);
  // Answers 503 on a connection over the cap, without waiting for it.
  static void refuse(int fd);

  const ConnectionLimits limits_;
  std::atomic<int> open_{0};
};

}  // namespace lococo::server_detail
