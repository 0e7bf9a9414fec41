#include "lococo/train/distributed.h"

#include <chrono>
#include <stdexcept>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace lococo {
namespace {

std::pair<std::string, uint16_t> split_host_port(const std::string& master) {
  const auto colon = master.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == master.size())
    throw std::invalid_argument(fmt::format("--master '{}': expected HOST:PORT", master));
  int port = 0;
  try {
    port = std::stoi(master.substr(colon + 1));
  } catch (const std::exception&) {
    port = -1;
  }
  if (port <= 0 || port > 65535) throw std::invalid_argument(fmt::format("--master '{}': bad port", master));
  return {master.substr(0, colon), static_cast<uint16_t>(port)};
}

// Runs one collective and turns c10d's errors (a peer gone, a timeout) into
// one clear line.
template <typename F>
void collective(int rank, const char* what, double* seconds, F&& run) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    run()->wait();
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    throw std::runtime_error(fmt::format("rank {}: {} failed (a peer died or timed out): {}", rank, what, msg));
  }
  *seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

struct Distributed::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

Distributed::Distributed(const DistOptions& o) : options_(o) {
  if (o.world_size < 1) throw std::invalid_argument("--world-size must be at least 1");
  if (o.rank < 0 || o.rank >= o.world_size)
    throw std::invalid_argument(fmt::format("--rank {} outside 0..{}", o.rank, o.world_size - 1));
  if (o.timeout_seconds <= 0) throw std::invalid_argument("--dist-timeout must be positive");
  if (!active()) return;
  const auto [host, port] = split_host_port(o.master);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_seconds * 1000));
  impl_ = std::make_unique<Impl>();
  try {
    c10d::TCPStoreOptions so;
    so.port = port;
    so.isServer = o.rank == 0;
    so.numWorkers = o.world_size;
    so.waitWorkers = true;
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(host, so);
    auto go = c10d::ProcessGroupGloo::Options::create(timeout);
    go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host == "localhost" ? "127.0.0.1" : host));
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, o.rank, o.world_size, go);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    throw std::runtime_error(fmt::format("rank {}: cannot join {} ranks at {}: {}", o.rank, o.world_size, o.master, msg));
  }
}

Distributed::~Distributed() = default;

void Distributed::broadcast(const std::vector<torch::Tensor>& tensors) {
  if (!active()) return;
  torch::NoGradGuard g;
  for (const auto& t : tensors) {
    std::vector<at::Tensor> one = {t.detach()};
    collective(rank(), "broadcast", &comm_seconds_, [&] { return impl_->group->broadcast(one); });
  }
}

void Distributed::average_gradients(const std::vector<torch::Tensor>& params) {
  if (!active()) return;
  torch::NoGradGuard g;
  // Buckets of whole tensors, flattened into one buffer per all-reduce.
  size_t begin = 0;
  while (begin < params.size()) {
    size_t end = begin;
    int64_t bytes = 0;
    std::vector<torch::Tensor> grads;
    while (end < params.size() && (grads.empty() || bytes < options_.bucket_bytes)) {
      auto& p = params[end++];
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
      bytes += p.numel() * p.element_size();
    }
    std::vector<at::Tensor> flat = {torch::cat([&] {
      std::vector<torch::Tensor> v;
      for (auto& gr : grads) v.push_back(gr.reshape({-1}).to(torch::kFloat32));
      return v;
    }())};
    collective(rank(), "gradient all-reduce", &comm_seconds_, [&] { return impl_->group->allreduce(flat); });
    flat[0].div_(world_size());
    int64_t offset = 0;
    for (auto& gr : grads) {
      gr.copy_(flat[0].narrow(0, offset, gr.numel()).view(gr.sizes()));
      offset += gr.numel();
    }
    begin = end;
  }
}

double Distributed::mean(double value) {
  if (!active()) return value;
  std::vector<at::Tensor> t = {torch::tensor({value}, torch::kFloat64)};
  collective(rank(), "all-reduce", &comm_seconds_, [&] { return impl_->group->allreduce(t); });
  return t[0].item<double>() / world_size();
}

bool Distributed::any(bool flag) {
  if (!active()) return flag;
  std::vector<at::Tensor> t = {torch::tensor({flag ? 1.0 : 0.0}, torch::kFloat64)};
  c10d::AllreduceOptions max;
  max.reduceOp = c10d::ReduceOp::MAX;
  collective(rank(), "all-reduce", &comm_seconds_, [&] { return impl_->group->allreduce(t, max); });
  return t[0].item<double>() > 0;
}

std::pair<int64_t, int64_t> Distributed::shard(int64_t global, const std::string& what) const {
  if (global % world_size() != 0)
    throw std::invalid_argument(fmt::format("{} ({}) must be a multiple of --world-size ({})", what, global, world_size()));
  const int64_t per = global / world_size();
  return {rank() * per, (rank() + 1) * per};
}

}  // namespace lococo
