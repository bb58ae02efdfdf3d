// Data-parallel training over several processes through torch.distributed's Gloo backend
// (c10d::ProcessGroupGloo, the one PyTorch's `init_process_group("gloo")` creates).
//
// Rendezvous, as torch.distributed's env:// and file:// init methods:
//   - store_file set: a c10d::FileStore at that path (one host, or a shared file system);
//   - else master_addr set: a c10d::TCPStore that rank 0 serves at master_addr:master_port
//     (several hosts; with `agent_store` every rank is a client of a store someone else serves,
//     as under torchrun).
// Only this header's users see no c10d or Gloo type: the process group lives in distributed.cc.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace anybit {

struct DistributedOptions {
  int rank = 0;
  int world_size = 1;       // 1: no process group, every call is a no-op
  std::string store_file;   // FileStore rendezvous
  std::string master_addr;  // TCPStore rendezvous
  int master_port = 29500;
  bool agent_store = false;  // the TCP store is served by a launcher (torchrun), not by rank 0
  std::string gloo_host;     // address Gloo binds to ("" = this host's name, else loopback)
  int timeout_s = 300;
};

// The environment a launcher sets, as torchrun does: RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE; ANYBIT_STORE_FILE for a file rendezvous.
// world_size stays 1 when WORLD_SIZE is unset. Throws Error on a malformed value.
DistributedOptions distributed_from_environment();

class Communicator {
 public:
  explicit Communicator(const DistributedOptions& options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Sums each tensor over all processes, in place; every process gets the same values.
  void allreduce_sum(std::vector<at::Tensor>& tensors);
  // Copies rank 0's values into each tensor of every other process.
  void broadcast_from_root(std::vector<at::Tensor>& tensors);
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
};

}  // namespace anybit
