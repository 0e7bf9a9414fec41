// lococo launch -n N -- <training command>: runs N local ranks of a
// data-parallel training command (include/lococo/train/distributed.h), each with
// --world-size N --rank R --master 127.0.0.1:<free port> appended. When one
// rank fails the others are stopped; Ctrl-C reaches every rank, which then
// checkpoint together.
#include <csignal>
#include <filesystem>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include "cli_common.h"
#include "commands.h"

namespace lococo::cli {
namespace {

// A port nobody listens on now (bound to 0, read back, released).
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("launch: cannot find a free loopback port");
  ::close(fd);
  return ntohs(addr.sin_port);
}

pid_t spawn_rank(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("launch: fork failed");
  if (pid == 0) {
    ::execv("/proc/self/exe", argv.data());
    std::_Exit(127);
  }
  return pid;
}

volatile std::sig_atomic_t g_signal = 0;
void remember_signal(int sig) { g_signal = sig; }

// Installed without SA_RESTART, so that a signal interrupts waitpid() and is
// passed on to the ranks (std::signal restarts it, and the signal was lost).
void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = remember_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

// Waits for every rank; the first failure stops the rest. Returns the exit code.
int wait_for_ranks(std::vector<pid_t> pids) {
  int result = 0;
  size_t alive = pids.size();
  bool stopping = false;
  while (alive > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno != EINTR) break;
      if (g_signal) {
        for (pid_t p : pids) if (p > 0) ::kill(p, g_signal);  // pass Ctrl-C / SIGTERM on; the ranks checkpoint
        if (!stopping) fmt::print(stderr, "lococo launch: passing signal {} to the ranks\n", static_cast<int>(g_signal));
        stopping = true;
        g_signal = 0;
      }
      continue;
    }
    for (size_t r = 0; r < pids.size(); ++r) {
      if (pids[r] != pid) continue;
      pids[r] = -1;
      --alive;
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code != 0 && result == 0) {
        result = code;
        if (!stopping) fmt::print(stderr, "lococo launch: rank {} exited with {}; stopping the others\n", r, code);
      }
    }
    if (result != 0 && !stopping) {
      stopping = true;
      for (pid_t p : pids) if (p > 0) ::kill(p, SIGTERM);
    }
  }
  return result;
}

}  // namespace

void add_launch_command(CLI::App& root) {
  struct Flags {
    int ranks = 2;
    std::string master;
    std::vector<std::string> command;
  };
  auto f = std::make_shared<Flags>();
  auto* sub = root.add_subcommand("launch", "Run N local ranks of a data-parallel training command: launch -n 2 -- train-compressor ...");
  sub->add_option("-n,--ranks", f->ranks, "Number of ranks")->check(CLI::Range(1, 256))->capture_default_str();
  sub->add_option("--master", f->master, "HOST:PORT for the rendezvous (default: 127.0.0.1 and a free port)");
  sub->add_option("command", f->command, "The training command and its flags, after --")->required();
  register_command(sub, [f] {
    const std::string& cmd = f->command.front();
    if (cmd != "pretrain" && cmd != "train-compressor" && cmd != "tune")
      throw std::invalid_argument(fmt::format("launch: '{}' is not a training command (pretrain, train-compressor, tune)", cmd));
    const std::string master = f->master.empty() ? fmt::format("127.0.0.1:{}", free_loopback_port()) : f->master;
    // The ranks meet through a file store in a private directory: no port is
    // opened for the rendezvous (a TCP store would listen on every interface).
    char dir_template[] = "/tmp/lococo-launch-XXXXXX";
    if (!::mkdtemp(dir_template)) throw std::runtime_error("launch: cannot create a directory in /tmp");
    const std::string store_dir = dir_template;
    if (std::getenv("OMP_NUM_THREADS") == nullptr) {  // share the cores instead of oversubscribing them
      const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
      ::setenv("OMP_NUM_THREADS", std::to_string(std::max(1u, cores / f->ranks)).c_str(), 1);
    }
    catch_stop_signals();
    std::vector<pid_t> pids;
    for (int r = 0; r < f->ranks; ++r) {
      std::vector<std::string> args = {"lococo"};
      args.insert(args.end(), f->command.begin(), f->command.end());
      for (const std::string& a : {std::string("--world-size"), std::to_string(f->ranks), std::string("--rank"),
                                   std::to_string(r), std::string("--master"), master,
                                   std::string("--dist-store-dir"), store_dir})
        args.push_back(a);
      pids.push_back(spawn_rank(args));
    }
    fmt::print(stderr, "lococo launch: {} ranks of '{}' (rendezvous {})\n", f->ranks, cmd, master);
    const int code = wait_for_ranks(pids);
    std::error_code ignored;
    std::filesystem::remove_all(store_dir, ignored);
    return code;
  });
}

}  // namespace lococo::cli
