// The Gloo process group behind Communicator; see distributed.h. The only TU that sees
// c10d and Gloo headers (compiled with USE_C10D_GLOO, linked with libgloo).
#include "anybit/train/distributed.h"

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>

#include "anybit/quant/spec.h"

namespace anybit {

namespace {

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < lo || x > hi)
    throw Error(std::string("environment: ") + name + "='" + v + "' is not an integer in [" + std::to_string(lo) +
                ", " + std::to_string(hi) + "]");
  return static_cast<int>(x);
}

std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

DistributedOptions distributed_from_environment() {
  DistributedOptions o;
  o.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 16);
  o.rank = env_int("RANK", 0, 0, o.world_size - 1);
  o.master_addr = env_str("MASTER_ADDR");
  o.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  o.store_file = env_str("ANYBIT_STORE_FILE");
  o.agent_store = env_str("TORCHELASTIC_USE_AGENT_STORE") == "True";
  if (o.world_size > 1 && o.store_file.empty() && o.master_addr.empty())
    throw Error("environment: WORLD_SIZE=" + std::to_string(o.world_size) +
                " needs MASTER_ADDR (and MASTER_PORT) or ANYBIT_STORE_FILE to meet the other processes");
  return o;
}

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

Communicator::Communicator(const DistributedOptions& o) : rank_(o.rank), size_(o.world_size) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    throw Error("distributed: rank " + std::to_string(o.rank) + " is not in [0, " + std::to_string(o.world_size) + ")");
  if (o.world_size == 1) return;
  const std::chrono::milliseconds timeout(int64_t{o.timeout_s} * 1000);
  c10::intrusive_ptr<c10d::Store> store;
  try {
    if (!o.store_file.empty()) {
      store = c10::make_intrusive<c10d::FileStore>(o.store_file, o.world_size);
    } else if (!o.master_addr.empty()) {
      c10d::TCPStoreOptions so;
      so.port = static_cast<std::uint16_t>(o.master_port);
      so.isServer = o.rank == 0 && !o.agent_store;
      so.numWorkers = o.world_size;
      so.waitWorkers = false;
      so.timeout = timeout;
      store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    } else {
      throw Error("distributed: " + std::to_string(o.world_size) + " processes need a store file or a master address");
    }
    store->setTimeout(timeout);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("anybit/", store);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(o.gloo_host.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                                : c10d::ProcessGroupGloo::createDeviceForHostname(o.gloo_host));
    opts->threads = 1;
    impl_ = std::make_unique<Impl>();
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, o.rank, o.world_size, opts);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw Error("distributed: rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size) +
                " could not join the process group: " + what.substr(0, what.find("\nException raised from")));
  }
}

Communicator::~Communicator() = default;

void Communicator::allreduce_sum(std::vector<at::Tensor>& tensors) {
  if (!impl_ || tensors.empty()) return;
  for (auto& t : tensors) {  // a vector given to Gloo means replicas of one tensor: one call each
    std::vector<at::Tensor> one{t};
    c10d::AllreduceOptions ao;
    ao.reduceOp = c10d::ReduceOp::SUM;
    impl_->group->allreduce(one, ao)->wait();
  }
}

void Communicator::broadcast_from_root(std::vector<at::Tensor>& tensors) {
  if (!impl_) return;
  for (auto& t : tensors) {  // Gloo broadcasts one tensor per call
    std::vector<at::Tensor> one{t};
    c10d::BroadcastOptions bo;
    bo.rootRank = 0;
    impl_->group->broadcast(one, bo)->wait();
  }
}

void Communicator::barrier() {
  if (impl_) impl_->group->barrier()->wait();
}

}  // namespace anybit
