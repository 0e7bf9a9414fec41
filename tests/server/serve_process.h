// Test helpers: `lococo serve` started as its own process, and raw loopback
// connections that send what a hostile or careless client would.
#pragma once

#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lococo::testing {

// `lococo serve` as its own process: the real binary, its own RSS.
class ServeProcess {
 public:
  // `port` 0: any free port (read from the log once it listens).
  ServeProcess(const std::filesystem::path& model, const std::filesystem::path& log, const std::string& flags,
               int port = 0) {
    std::filesystem::remove(log);  // an older run's address must not be read as this one's
    pid_ = ::fork();
    if (pid_ == 0) {
      // Started as a user would, with none of the thread settings lococo chooses.
      const std::string cmd = std::string("exec env -u OMP_WAIT_POLICY -u OMP_NUM_THREADS -u OPENBLAS_NUM_THREADS "
                                          "-u LOCOCO_RESTARTED ") + LOCOCO_BINARY + " serve -m " + model.string() +
                              " --port " + std::to_string(port) + " --cache h2o --budget 32 --chunk 16 " + flags + " > " + log.string() + " 2>&1";
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    const std::regex url(R"(http://127\.0\.0\.1:(\d+))");
    for (int i = 0; i < 600 && port_ == 0 && exit_status(std::chrono::milliseconds(0)) < 0; ++i) {  // it prints its address once listening
      std::ifstream in(log);
      const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::smatch m;
      if (std::regex_search(text, m, url)) port_ = std::stoi(m[1]);
      else std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~ServeProcess() {  // SIGTERM drains; a server that does not stop in 10 s is killed
    if (!stopped_) terminate(std::chrono::seconds(10));
    if (!stopped_) ::kill(pid_, SIGKILL);
    if (!stopped_) ::waitpid(pid_, nullptr, 0);
  }
  // Sends SIGTERM; the exit status once it exits within `wait`, else -1 (still running).
  int terminate(std::chrono::milliseconds wait) {
    ::kill(pid_, SIGTERM);
    return exit_status(wait);
  }
  // The exit status when it exits within `wait` (it may have already), else -1.
  int exit_status(std::chrono::milliseconds wait) {
    const auto until = std::chrono::steady_clock::now() + wait;
    int status = 0;
    while (!stopped_) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        stopped_ = true;
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      } else if (std::chrono::steady_clock::now() > until) {
        return -1;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    return status_;
  }
  int port() const { return port_; }
  // The server's environment, NUL-separated as /proc shows it.
  std::string environment() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/environ", std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  int64_t rss_bytes() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    for (std::string line; std::getline(in, line);)
      if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
    return 0;
  }

 private:
  pid_t pid_ = 0;
  int port_ = 0;
  bool stopped_ = false;
  int status_ = 0;
};

// A raw connection that sends one request and reads until `want` appears
// (or the peer closes); closing it is a client hanging up mid-stream.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval limit{30, 0};  // a server that never answers fails the test instead of hanging it
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  }
  ~RawConnection() { hang_up(); }
  bool post(const std::string& path, const std::string& body) {
    const std::string req = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    return connected_ && ::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
  }
  // Sends bytes as they are (false when the server closed or reset).
  bool send_raw(const std::string& bytes) {
    return connected_ && ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }
  bool read_until(const std::string& want) {
    char buf[4096];
    while (received_.find(want) == std::string::npos) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return false;
      received_.append(buf, n);
    }
    return true;
  }
  // Reads what arrives within `wait` without blocking past it; true once the
  // server closed the connection (end of stream or reset).
  bool closed_within(std::chrono::milliseconds wait) {
    const auto until = std::chrono::steady_clock::now() + wait;
    char buf[4096];
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
      if (n > 0) received_.append(buf, n);
    }
  }
  const std::string& received() const { return received_; }
  int fd() const { return fd_; }
  void hang_up() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string received_;
};

}  // namespace lococo::testing
