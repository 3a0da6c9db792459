// Data-parallel collectives on libtorch's own distributed engine (c10d): a TCPStore
// rendezvous (rank 0 hosts it at MASTER_ADDR:MASTER_PORT, as torchrun does), then
// ProcessGroupGloo on CPU tensors, or ProcessGroupNCCL when this libtorch has CUDA
// and NCCL and the tensors live on a GPU. No transport of our own: every byte goes
// through c10d. Every call blocks; callers run them on the addon's executor thread.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sdtune::dist {

struct ProcessGroupOptions {
  std::string masterAddr = "127.0.0.1";
  int masterPort = 29500;
  int rank = 0;
  int worldSize = 1;
  // How long a collective (and the rendezvous) waits for the other ranks before failing.
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};
  std::string backend = "gloo";    // "gloo", or "nccl" (CUDA builds only)
  size_t bucketBytes = 25u << 20;  // gradient all-reduce bucket size, as DDP's default
  // torchrun's static rendezvous hosts the store itself (TORCHELASTIC_USE_AGENT_STORE): every rank
  // is then a client, and keys live under `storePrefix` (PyTorch's "/worker/attempt_<restart>").
  bool agentStore = false;
  std::string storePrefix;
};

class ProcessGroup {
 public:
  // Blocks until every rank has joined (or the timeout passes).
  static std::shared_ptr<ProcessGroup> connect(const ProcessGroupOptions& options);
  ~ProcessGroup();

  int rank() const { return options_.rank; }
  int worldSize() const { return options_.worldSize; }
  const ProcessGroupOptions& options() const { return options_; }

  // In place: every defined tensor becomes the mean over ranks. Tensors are flattened into
  // buckets of about options.bucketBytes (one all-reduce each); undefined tensors are skipped.
  void allReduceMean(const std::vector<torch::Tensor>& tensors);
  // In place: every tensor becomes rank `root`'s copy.
  void broadcast(const std::vector<torch::Tensor>& tensors, int root = 0);
  void barrier();
  // Each rank's value, in rank order.
  std::vector<int64_t> allGather(int64_t value);
  // The mean over ranks of each value (losses, flags).
  std::vector<double> allReduceMeanValues(const std::vector<double>& values);
  // Marks the group unusable: later calls fail at once (after a failure, a rank must not wait again).
  void abort(const std::string& why);

  // The gradient all-reduce overlapped with the backward, as DDP's reducer does it, over `params`
  // (the trained parameters, in the same order on every rank; replaces an earlier set): hooks on
  // their gradient accumulators launch each bucket's c10d all-reduce (about options.bucketBytes, in
  // reverse parameter order) as soon as its gradients have arrived, while the backward goes on.
  // (c10d::Reducer itself cannot be built against Debian's libtorch headers: reducer.hpp includes
  // the distributed-autograd headers, which the package leaves out.)
  void attachReducer(const std::vector<torch::Tensor>& params);
  // loss.backward(), then a wait for the launched all-reduces: the gradients are the mean over
  // ranks when it returns (attachReducer first; without it, a plain backward, which is the mean on
  // one rank). False when a gradient grew after its bucket was sent (a parameter reached twice
  // through nested backwards): then the whole gradients were averaged after the backward instead;
  // false too for the plain backward (nothing was overlapped).
  bool backwardOverlapped(const torch::Tensor& loss);

 private:
  struct Impl;
  explicit ProcessGroup(ProcessGroupOptions options);
  void run(const char* what, const std::function<void()>& collective);
  void allReduceMeanUnguarded(const std::vector<torch::Tensor>& tensors);
  ProcessGroupOptions options_;
  std::unique_ptr<Impl> impl_;
  std::string failed_;
};

// FNV-1a over the tensors' bytes (as float32 copies, in order): equal weights, equal hash.
int64_t hashTensors(const std::vector<torch::Tensor>& tensors);

}  // namespace sdtune::dist
