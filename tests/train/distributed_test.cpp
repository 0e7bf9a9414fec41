// Data-parallel training over c10d Gloo on 127.0.0.1: two ranks equal one
// process with the same global batch; `lococo launch` runs ranks; a rank that
// dies makes the others fail within the timeout instead of hanging.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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

// Starts one rank as its own process, output to `log`.
pid_t start_rank(const std::string& args, const std::filesystem::path& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string cmd = std::string(LOCOCO_BINARY) + " " + args + " > " + log.string() + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  return pid;
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

}  // namespace
}  // namespace lococo
