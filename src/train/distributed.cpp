#include "lococo/train/distributed.h"

#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
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

// libtorch 1.13's TCPStore always listens on every interface (its options
// have no address), which would expose an unauthenticated store wherever rank
// 0 runs. While rank 0 builds its store, bind() calls on this thread that ask
// for the wildcard address are given the master's address instead: this
// executable's bind() takes precedence over the C library's for libtorch,
// and passes every other call through unchanged.
thread_local const sockaddr_storage* t_bind_instead = nullptr;

// The IPv4 or IPv6 address of `host` (a name or a literal), for a socket of `family`.
bool resolve_for(const std::string& host, int family, sockaddr_storage* out) {
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || !found) return false;
  bool ok = false;
  for (addrinfo* a = found; a && !ok; a = a->ai_next) {
    if (a->ai_family == family) {
      std::memcpy(out, a->ai_addr, a->ai_addrlen);
      ok = true;
    } else if (family == AF_INET6 && a->ai_family == AF_INET) {  // an IPv4 address on a dual-stack socket
      auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
      *v6 = sockaddr_in6{};
      v6->sin6_family = AF_INET6;
      v6->sin6_addr.s6_addr[10] = v6->sin6_addr.s6_addr[11] = 0xff;
      std::memcpy(&v6->sin6_addr.s6_addr[12], &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, 4);
      ok = true;
    }
  }
  ::freeaddrinfo(found);
  return ok;
}

bool is_wildcard(const sockaddr* addr) {
  if (addr->sa_family == AF_INET) return reinterpret_cast<const sockaddr_in*>(addr)->sin_addr.s_addr == htonl(INADDR_ANY);
  if (addr->sa_family == AF_INET6)
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr, &in6addr_any, sizeof(in6_addr)) == 0;
  return false;
}

// This machine's address on the route to `host` (what a connection to it
// would leave from): where this rank's transport should listen.
std::string local_address_towards(const std::string& host, uint16_t port) {
  addrinfo hints{}, *found = nullptr;
  hints.ai_socktype = SOCK_DGRAM;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found)
    throw std::invalid_argument(fmt::format("--master: cannot resolve '{}'", host));
  const int fd = ::socket(found->ai_family, SOCK_DGRAM, 0);
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  const bool ok = fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0;
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(found);
  if (!ok) throw std::runtime_error(fmt::format("--master {}: no route to it from this machine", host));
  char text[INET6_ADDRSTRLEN] = "";
  const void* a = local.ss_family == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
                                             : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
  ::inet_ntop(local.ss_family, a, text, sizeof(text));
  return text;
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
}  // namespace lococo

extern "C" int bind(int fd, const sockaddr* addr, socklen_t len) {
  using Bind = int (*)(int, const sockaddr*, socklen_t);
  static const Bind real = reinterpret_cast<Bind>(::dlsym(RTLD_NEXT, "bind"));
  using lococo::t_bind_instead;
  if (t_bind_instead && addr && lococo::is_wildcard(addr) && t_bind_instead->ss_family == addr->sa_family) {
    sockaddr_storage instead = *t_bind_instead;
    const uint16_t port = addr->sa_family == AF_INET ? reinterpret_cast<const sockaddr_in*>(addr)->sin_port
                                                     : reinterpret_cast<const sockaddr_in6*>(addr)->sin6_port;
    if (instead.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&instead)->sin_port = port;
    else reinterpret_cast<sockaddr_in6*>(&instead)->sin6_port = port;
    return real(fd, reinterpret_cast<const sockaddr*>(&instead), len);
  }
  return real(fd, addr, len);
}

namespace lococo {

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
    impl_->store = o.store_dir.empty() ? tcp_store(host, port, timeout) : file_store(timeout);
    const std::string local = !o.host.empty()       ? o.host
                              : !o.store_dir.empty() ? std::string("127.0.0.1")
                                                     : local_address_towards(host, port);
    auto go = c10d::ProcessGroupGloo::Options::create(timeout);
    go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(local));
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, o.rank, o.world_size, go);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    throw std::runtime_error(fmt::format("rank {}: cannot join {} ranks at {}: {}", o.rank, o.world_size,
                                         o.store_dir.empty() ? o.master : o.store_dir, msg));
  }
}

c10::intrusive_ptr<c10d::Store> Distributed::tcp_store(const std::string& host, uint16_t port,
                                                       std::chrono::milliseconds timeout) const {
  c10d::TCPStoreOptions so;
  so.port = port;
  so.isServer = options_.rank == 0;
  so.numWorkers = options_.world_size;
  so.waitWorkers = true;
  so.timeout = timeout;
  if (!so.isServer) return c10::make_intrusive<c10d::TCPStore>(host, so);
  // Rank 0 listens on the master's address only (see bind() above).
  static std::mutex building;
  std::lock_guard<std::mutex> lock(building);
  sockaddr_storage v4{}, v6{};
  const bool has4 = resolve_for(host, AF_INET, &v4), has6 = resolve_for(host, AF_INET6, &v6);
  if (!has4 && !has6) throw std::invalid_argument(fmt::format("--master: cannot resolve '{}'", host));
  // libtorch listens on an IPv6 socket where it can (IPv4 reaches it mapped), else IPv4.
  t_bind_instead = has6 ? &v6 : &v4;
  try {
    auto store = c10::make_intrusive<c10d::TCPStore>(host, so);
    t_bind_instead = nullptr;
    return store;
  } catch (...) {
    t_bind_instead = nullptr;
    throw;
  }
}

c10::intrusive_ptr<c10d::Store> Distributed::file_store(std::chrono::milliseconds timeout) const {
  auto store = c10::make_intrusive<c10d::FileStore>(options_.store_dir + "/store", options_.world_size);
  store->setTimeout(timeout);
  return store;
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

// Through the store, not a barrier: Gloo's barrier keeps the group's timeout
// whatever its options say. Rank 0 sets key n; the others wait for it with
// their own timeout. Every rank has passed wait n - 1 (the collectives of the
// step between), so rank 0 drops that key.
void Distributed::wait_for_main(const char* what) {
  if (!active()) return;
  const std::string key = fmt::format("lococo/main/{}", main_waits_++);
  try {
    if (is_main()) {
      impl_->store->set(key, std::vector<uint8_t>{1});
      if (main_waits_ > 1) impl_->store->deleteKey(fmt::format("lococo/main/{}", main_waits_ - 2));
    } else {
      impl_->store->wait({key}, std::chrono::milliseconds(static_cast<int64_t>(options_.main_timeout_seconds * 1000)));
    }
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    throw std::runtime_error(fmt::format("rank {}: {} failed (rank 0 died or took longer than --dist-main-timeout): {}",
                                         rank(), what, msg));
  }
}

void Distributed::expect_same(int64_t value, const std::string& what) {
  if (!active()) return;
  std::vector<at::Tensor> lo = {torch::tensor({static_cast<double>(value)}, torch::kFloat64)};
  std::vector<at::Tensor> hi = {lo[0].clone()};
  c10d::AllreduceOptions min, max;
  min.reduceOp = c10d::ReduceOp::MIN;
  max.reduceOp = c10d::ReduceOp::MAX;
  collective(rank(), "all-reduce", &comm_seconds_, [&] { return impl_->group->allreduce(lo, min); });
  collective(rank(), "all-reduce", &comm_seconds_, [&] { return impl_->group->allreduce(hi, max); });
  if (lo[0].item<double>() != hi[0].item<double>())
    throw std::runtime_error(fmt::format(
        "rank {}: the ranks disagree on {} (from {} to {}; this rank: {}): every rank must resume from the same "
        "checkpoint (copy rank 0's output directory to every machine)",
        rank(), what, lo[0].item<double>(), hi[0].item<double>(), value));
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
