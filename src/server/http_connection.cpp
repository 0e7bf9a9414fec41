#include "server/http_connection.h"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace lococo::server_detail {
namespace {

thread_local Connection* t_current = nullptr;
// Set on the accept thread when it handles a connection itself (the thread
// count is at its limit or no thread could start): the connection is refused.
thread_local bool t_refuse = false;

// One thread per open connection, so a slow client never waits for another's
// thread; shutdown() waits for them all. Past `limit` threads (connections
// the server refuses still pass through here) the accept thread answers the
// connection itself.
class ConnectionThreads : public httplib::TaskQueue {
 public:
  explicit ConnectionThreads(int limit) : limit_(limit) {}
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (running_ < limit_) {
        ++running_;
        try {
          std::thread([this, fn] { run(fn); }).detach();
          return;
        } catch (const std::system_error&) {
          --running_;
        }
      }
    }
    t_refuse = true;
    fn();
    t_refuse = false;
  }
  void shutdown() override {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return running_ == 0; });
  }

 private:
  void run(const std::function<void()>& fn) {
    fn();
    std::lock_guard<std::mutex> lock(mu_);
    if (--running_ == 0) done_.notify_all();
  }
  const int limit_;
  std::mutex mu_;
  std::condition_variable done_;
  int running_ = 0;
};

void address_of(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  char text[INET6_ADDRSTRLEN] = "";
  port = 0;
  if (rc == 0 && addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
    port = ntohs(a->sin_port);
  } else if (rc == 0 && addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
    port = ntohs(a->sin6_port);
  }
  ip = text;
}

}  // namespace

// httplib reads and writes a request through this: reads end at the
// connection's deadline, writes fail when the client has left or has not
// taken any bytes for limits.write_seconds.
class ConnectionStream final : public httplib::Stream {
 public:
  explicit ConnectionStream(Connection& c) : c_(c) {}
  bool is_readable() const override { return c_.has_buffered() || c_.wait(POLLIN, c_.deadline_); }
  bool is_writable() const override { return !c_.peer_gone() && c_.wait(POLLOUT, write_deadline()); }
  ssize_t read(char* out, size_t size) override {
    if (!c_.has_buffered()) {
      if (!c_.wait(POLLIN, c_.deadline_)) return -1;
      ssize_t n;
      do n = ::recv(c_.fd_, c_.buffer_, sizeof(c_.buffer_), MSG_DONTWAIT);
      while (n < 0 && errno == EINTR);
      if (n <= 0) return n < 0 ? -1 : 0;
      c_.begin_ = 0;
      c_.end_ = static_cast<size_t>(n);
    }
    const size_t k = std::min(size, c_.end_ - c_.begin_);
    std::memcpy(out, c_.buffer_ + c_.begin_, k);
    c_.begin_ += k;
    return static_cast<ssize_t>(k);
  }
  ssize_t write(const char* data, size_t size) override {
    size_t sent = 0;
    while (sent < size) {
      if (!c_.wait(POLLOUT, write_deadline())) return -1;
      const ssize_t n = ::send(c_.fd_, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno != EAGAIN && errno != EINTR) return -1;
      if (n > 0) sent += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { address_of(c_.fd_, true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address_of(c_.fd_, false, ip, port); }
  socket_t socket() const override { return c_.fd_; }

 private:
  Connection::Clock::time_point write_deadline() const {
    return Connection::Clock::now() + Connection::seconds(c_.limits_.write_seconds);
  }
  Connection& c_;
};

Connection* Connection::current() { return t_current; }

bool Connection::peer_gone() const {
  pollfd p{fd_, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

bool Connection::wait(short events, Clock::time_point until) const {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (rc > 0) return (p.revents & (events | POLLHUP | POLLERR)) != 0;
    if (rc < 0 && errno != EINTR) return false;
  }
}

GuardedHttpServer::GuardedHttpServer(ConnectionLimits limits) : limits_(limits) {
  const int threads = limits_.max_connections + 64;  // room for refusing the connections beyond the cap
  new_task_queue = [threads] { return new ConnectionThreads(threads); };
}

void GuardedHttpServer::refuse(int fd) {
  static const std::string reply = [] {
    const std::string body =
        R"({"error":{"message":"too many open connections, retry later","type":"server_error","code":503}})";
    return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
           "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  }();
  (void)::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

bool GuardedHttpServer::process_and_close_socket(socket_t sock) {
  const int open = ++open_;
  if (t_refuse || open > limits_.max_connections) refuse(sock);
  else serve_connection(sock);
  --open_;
  ::close(sock);
  return true;
}

void GuardedHttpServer::serve_connection(int fd) {
  Connection c(fd, limits_);
  t_current = &c;
  for (int i = 0; i < limits_.requests_per_connection && svr_sock_ != INVALID_SOCKET; ++i) {
    if (!c.has_buffered() && !c.wait(POLLIN, Connection::Clock::now() + Connection::seconds(limits_.idle_seconds)))
      break;
    c.deadline_ = Connection::Clock::now() + Connection::seconds(limits_.header_seconds);
    ConnectionStream stream(c);
    bool client_closes = false;
    const bool last = i + 1 == limits_.requests_per_connection;
    if (!process_request(stream, last, client_closes, nullptr) || client_closes || c.close_after_reply_) break;
  }
  t_current = nullptr;
  if (c.close_after_reply_) {
    // The client may still be sending the body we refused: stop writing, read
    // what comes for a moment, then close, so the reply is not lost to a reset.
    ::shutdown(fd, SHUT_WR);
    const auto until = Connection::Clock::now() + std::chrono::seconds(1);
    char sink[16384];
    size_t drained = 0;
    while (drained < (size_t{8} << 20) && c.wait(POLLIN, until)) {
      const ssize_t n = ::recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
      if (n > 0) drained += static_cast<size_t>(n);
    }
  }
  ::shutdown(fd, SHUT_RDWR);
}

}  // namespace lococo::server_detail
