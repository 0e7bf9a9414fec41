// Data-parallel training over c10d Gloo on 127.0.0.1: two ranks equal one
// process with the same global batch; `lococo launch` runs ranks; a rank that
// dies makes the others fail within the timeout instead of hanging.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include "lococo/train/distributed.h"
#include "lococo/io/safetensors.h"
#include "lococo/train/train_compressor.h"
#include "test_util.h"

namespace lococo {
namespace {

std::vector<int32_t> token_stream(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(3, 63);
  std::vector<int32_t> out(n);
  for (auto& t : out) t = tok(rng);
  return out;
}

CompressorTrainOptions options(const std::filesystem::path& out, int64_t sequences) {
  auto o = testing::small_compressor_options(out, /*budget=*/8, /*kernel=*/3, /*segments=*/4, /*steps=*/6);
  o.sequences = sequences;
  o.seed = 5;
  return o;
}

int free_port() {
  // Ports in a range the kernel does not hand out as ephemeral ones, varied per process.
  return 20000 + static_cast<int>(::getpid() % 20000);
}

std::map<std::string, torch::Tensor> read_all(const std::filesystem::path& p) {
  SafetensorsFile f(p);
  std::map<std::string, torch::Tensor> out;
  for (const auto& n : f.names()) out[n] = f.tensor(n).clone();
  return out;
}

TEST(Distributed, TwoRanksEqualOneProcessWithTheSameGlobalBatch) {
  torch::set_num_threads(1);
  testing::TempDir dir;
  auto model = testing::random_model(testing::tiny_config(), 3);
  TokenData data(token_stream(4000, 1));
  train_compressor(model, data, nullptr, options(dir / "single.safetensors", 2));

  const std::string master = "127.0.0.1:" + std::to_string(free_port());
  std::vector<std::thread> ranks;
  std::vector<std::string> errors(2);
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      try {
        auto o = options(dir / "two.safetensors", 2);
        o.dist = {2, r, master, 30};
        train_compressor(model, data, nullptr, o);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  ASSERT_EQ(errors[0], "");
  ASSERT_EQ(errors[1], "");

  auto single = read_all(dir / "single.safetensors");
  auto two = read_all(dir / "two.safetensors");
  const auto o1 = options("", 1);
  LococoCompressor init(o1.compressor.with_shape_of(model.config(), o1.cache), o1.seed);
  ASSERT_EQ(single.size(), two.size());
  for (const auto& [name, t] : single) {
    ASSERT_TRUE(two.count(name)) << name;
    testing::expect_close(two[name], t, 1e-4, 1e-5);
  }
  // The runs did train: the weights left their (shared) initial values.
  double change = 0;
  for (const auto& p : init.named_parameters())
    if (single.count(p.key())) change = std::max(change, (single[p.key()] - p.value()).abs().max().item<double>());
  EXPECT_GT(change, 1e-3);
}

TEST(Distributed, ShardsMustDivideAndRanksMustBeValid) {
  Distributed one;
  EXPECT_FALSE(one.active());
  EXPECT_EQ(one.shard(5, "--sequences"), std::make_pair(int64_t{0}, int64_t{5}));
  EXPECT_THROW(Distributed({2, 2, "127.0.0.1:1"}), std::invalid_argument);
  EXPECT_THROW(Distributed({2, 0, "nohostport"}), std::invalid_argument);
  EXPECT_THROW(Distributed({0, 0, "127.0.0.1:1"}), std::invalid_argument);
}

// A tiny model directory and a text file for the CLI tests.
struct CliFixture {
  testing::TempDir dir;
  CliFixture() {
    auto c = testing::tiny_config();
    c.vocab_size = 512;
    init_model_dir(dir / "model", c, 3);
    std::ofstream text(dir / "train.txt");
    for (int i = 0; i < 40; ++i)
      for (const auto& line : builtin_sample_text()) text << line << "\n";
  }
  std::string train_args(const std::string& out, int steps, const std::string& shape = "--buffer 2 --segments 4") const {
    return "train-compressor -m " + (dir / "model").string() + " --data " + (dir / "train.txt").string() +
           " --budget 8 --chunk 8 --kernel 3 --sequences 2 -q " + shape + " --steps " + std::to_string(steps) +
           " --out " + (dir / out).string();
  }
};

TEST(Distributed, LaunchRunsTheRanksAndRankZeroWrites) {
  CliFixture f;
  std::string out;
  ASSERT_EQ(testing::run_cli("launch -n 2 -- " + f.train_args("c.safetensors", 3), &out), 0) << out;
  EXPECT_TRUE(std::filesystem::exists(f.dir / "c.safetensors")) << out;
  EXPECT_NE(testing::run_cli("launch -n 2 -- generate -p hi", &out), 0);
  EXPECT_NE(out.find("not a training command"), std::string::npos) << out;
  // A sequence too short to ever compress is refused instead of looping.
  EXPECT_NE(testing::run_cli(f.train_args("d.safetensors", 3, "--buffer 16 --segments 2"), &out), 0);
  EXPECT_NE(out.find("never fills the cache"), std::string::npos) << out;
}

// Runs `command` (a shell command line) as its own process, output to `log`.
pid_t start_command(const std::string& command, const std::filesystem::path& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string cmd = "exec " + command + " > " + log.string() + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  return pid;
}

// Starts one lococo command (a rank) as its own process, output to `log`.
pid_t start_rank(const std::string& args, const std::filesystem::path& log) {
  return start_command(std::string(LOCOCO_BINARY) + " " + args, log);
}

TEST(Distributed, KillingOneRankFailsTheOtherWithinTheTimeout) {
  CliFixture f;
  const std::string master = "127.0.0.1:" + std::to_string(free_port() + 1);
  const std::string common = f.train_args("k.safetensors", 1000000) + " --world-size 2 --master " + master +
                             " --dist-timeout 10";
  const pid_t r0 = start_rank(common + " --rank 0", f.dir / "rank0.log");
  const pid_t r1 = start_rank(common + " --rank 1", f.dir / "rank1.log");
  // Wait until training runs (rank 0 logs steps), then kill rank 1 hard.
  const auto metrics = f.dir / "k.safetensors.metrics.jsonl";
  for (int i = 0; i < 600 && (!std::filesystem::exists(metrics) || std::filesystem::file_size(metrics) == 0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(std::filesystem::exists(metrics)) << "training never started";
  ::kill(r1, SIGKILL);
  ::waitpid(r1, nullptr, 0);
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(r0, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(40))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (done == 0) {
    ::kill(r0, SIGKILL);
    ::waitpid(r0, nullptr, 0);
    FAIL() << "rank 0 still running 40 s after its peer died";
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  std::ifstream in(f.dir / "rank0.log");
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(log.find("rank 0"), std::string::npos) << log;
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Waits up to `seconds` for `pid`; its exit code, or -1 after killing it.
int wait_exit(pid_t pid, int seconds) {
  int status = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(seconds)) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The local addresses (as /proc/net/tcp{,6} write them) of sockets listening on `port`.
std::vector<std::string> listeners_on(int port) {
  std::vector<std::string> out;
  const std::string hex_port = fmt::format(":{:04X}", port);
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      if (state == "0A" && local.size() > 5 && local.compare(local.size() - 5, 5, hex_port) == 0)
        out.push_back(local.substr(0, local.size() - 5));
    }
  }
  return out;
}

// Rank 0's rendezvous store listens on the master's address, not on every interface.
TEST(Distributed, TheStoreListensOnTheMasterAddressOnly) {
  CliFixture f;
  const int port = free_port() + 2;
  const pid_t r0 = start_rank(f.train_args("s.safetensors", 3) + " --world-size 2 --rank 0 --dist-timeout 20 --master 127.0.0.1:" +
                                  std::to_string(port), f.dir / "store.log");
  std::vector<std::string> listening;
  for (int i = 0; i < 400 && listening.empty(); ++i) {  // it waits for rank 1, listening
    listening = listeners_on(port);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(r0, SIGKILL);
  ::waitpid(r0, nullptr, 0);
  ASSERT_FALSE(listening.empty()) << read_text(f.dir / "store.log");
  for (const auto& a : listening)  // 127.0.0.1 as /proc writes it, plain or IPv4-mapped
    EXPECT_TRUE(a == "0100007F" || a == "0000000000000000FFFF00000100007F") << "listening on " << a;
}

// SIGTERM to launch reaches the ranks, which checkpoint and exit as
// interrupted (130); launch exits with them.
TEST(Distributed, LaunchPassesSigtermToTheRanks) {
  CliFixture f;
  const pid_t launch = start_rank("launch -n 2 -- " + f.train_args("t.safetensors", 1000000), f.dir / "launch.log");
  const auto metrics = f.dir / "t.safetensors.metrics.jsonl";
  for (int i = 0; i < 600 && (!std::filesystem::exists(metrics) || std::filesystem::file_size(metrics) == 0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(std::filesystem::exists(metrics)) << read_text(f.dir / "launch.log");
  ::kill(launch, SIGTERM);
  EXPECT_EQ(wait_exit(launch, 60), 130) << read_text(f.dir / "launch.log");
  EXPECT_TRUE(std::filesystem::exists(f.dir / "t.safetensors.ckpt")) << "the ranks did not checkpoint";
}

// Ranks that resume from different checkpoints (rank 1 on a machine without
// one) fail with a message instead of training out of step or hanging.
TEST(Distributed, RanksResumingFromDifferentStepsFail) {
  CliFixture f;
  std::string out;
  testing::run_cli("launch -n 2 -- " + f.train_args("r.safetensors", 1000) + " --stop-after 2", &out);
  ASSERT_TRUE(std::filesystem::exists(f.dir / "r.safetensors.ckpt")) << out;
  std::filesystem::create_directories(f.dir / "other");
  const std::string master = " --world-size 2 --dist-timeout 20 --resume --master 127.0.0.1:" + std::to_string(free_port() + 3);
  const pid_t r0 = start_rank(f.train_args("r.safetensors", 1000) + master + " --rank 0", f.dir / "r0.log");
  const pid_t r1 = start_rank(f.train_args("other/r.safetensors", 1000) + master + " --rank 1", f.dir / "r1.log");
  EXPECT_NE(wait_exit(r0, 60), 0);
  EXPECT_NE(wait_exit(r1, 60), 0);
  for (const char* log : {"r0.log", "r1.log"})
    EXPECT_NE(read_text(f.dir / log).find("disagree on the step to resume from"), std::string::npos) << read_text(f.dir / log);
}

// Rank 0 validates for longer than --dist-timeout while the others wait.
TEST(Distributed, ValidationLongerThanTheTimeoutDoesNotFailTheRun) {
  CliFixture f;
  std::string out;
  const std::string args = f.train_args("v.safetensors", 2) + " --val " + (f.dir / "train.txt").string() +
                           " --val-tokens 20000 --eval-every 1 --dist-timeout 1";
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(testing::run_cli("launch -n 2 -- " + args, &out), 0) << out;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(seconds, 2.0) << "validation too quick to test the wait";
}

// Two machines, as two network namespaces joined by a veth pair (10.231.0.1
// and 10.231.0.2): each rank's transport binds its own address. Needs root
// and iproute2; skipped otherwise.
TEST(Distributed, TwoHostsTrainTogether) {
  const std::string a = fmt::format("lococo-a{}", ::getpid()), b = fmt::format("lococo-b{}", ::getpid());
  auto sh = [](const std::string& cmd) { return std::system((cmd + " > /dev/null 2>&1").c_str()); };
  if (::geteuid() != 0 || sh("ip netns add " + a) != 0) GTEST_SKIP() << "needs root and network namespaces";
  struct Cleanup {
    std::function<void()> run;
    ~Cleanup() { run(); }
  } cleanup{[&] { sh("ip netns del " + a + "; ip netns del " + b); }};
  ASSERT_EQ(sh("ip netns add " + b), 0);
  const std::string va = "va" + std::to_string(::getpid() % 100000), vb = "vb" + std::to_string(::getpid() % 100000);
  ASSERT_EQ(sh("ip link add " + va + " netns " + a + " type veth peer name " + vb + " netns " + b), 0);
  ASSERT_EQ(sh("ip -n " + a + " addr add 10.231.0.1/24 dev " + va + " && ip -n " + a + " link set " + va +
               " up && ip -n " + a + " link set lo up"), 0);
  ASSERT_EQ(sh("ip -n " + b + " addr add 10.231.0.2/24 dev " + vb + " && ip -n " + b + " link set " + vb +
               " up && ip -n " + b + " link set lo up"), 0);
  CliFixture f;
  const std::string common = f.train_args("h.safetensors", 3) + " --world-size 2 --dist-timeout 30 --master 10.231.0.1:29511";
  std::filesystem::create_directories(f.dir / "rank1");
  const pid_t r0 = start_command("ip netns exec " + a + " " + LOCOCO_BINARY + " " + common + " --rank 0", f.dir / "h0.log");
  const pid_t r1 = start_command("ip netns exec " + b + " " + LOCOCO_BINARY + " " + f.train_args("rank1/h.safetensors", 3) +
                                     " --world-size 2 --dist-timeout 30 --master 10.231.0.1:29511 --rank 1",
                                 f.dir / "h1.log");
  EXPECT_EQ(wait_exit(r0, 120), 0) << read_text(f.dir / "h0.log");
  EXPECT_EQ(wait_exit(r1, 120), 0) << read_text(f.dir / "h1.log");
  EXPECT_TRUE(std::filesystem::exists(f.dir / "h.safetensors")) << "rank 0 writes the output";
}

}  // namespace
}  // namespace lococo
