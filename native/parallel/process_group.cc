#include "parallel/process_group.h"

// The c10d headers compile their backends only under these switches (libtorch's own build sets them).
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(SDTUNE_WITH_GLOO)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(SDTUNE_WITH_NCCL)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <map>
#include <stdexcept>

namespace sdtune::dist {

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
};

namespace {

std::string seconds(std::chrono::milliseconds ms) {
  return ms.count() % 1000 == 0 ? std::to_string(ms.count() / 1000) + " s" : std::to_string(ms.count()) + " ms";
}

c10::intrusive_ptr<c10d::ProcessGroup> makeGloo(const c10::intrusive_ptr<c10d::Store>& store,
                                                const ProcessGroupOptions& o) {
#if !defined(SDTUNE_WITH_GLOO)
  throw std::invalid_argument(
      "backend \"gloo\" needs gloo's headers at build time; this addon was built without them (install libgloo-dev "
      "and rebuild: npm run bootstrap)");
#else
  auto options = c10d::ProcessGroupGloo::Options::create(o.timeout);
  // As torch.distributed: GLOO_SOCKET_IFNAME picks the network interface, else the host name's address.
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  options->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.worldSize, options);
#endif
}

c10::intrusive_ptr<c10d::ProcessGroup> makeNccl(const c10::intrusive_ptr<c10d::Store>& store,
                                                const ProcessGroupOptions& o) {
#if defined(SDTUNE_WITH_NCCL)
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = o.timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.worldSize, options);
#else
  throw std::invalid_argument(
      "backend \"nccl\" needs a libtorch built with CUDA and NCCL; this addon was built without (use \"gloo\")");
#endif
}

// Tensors of one dtype and device, cut into buckets of about `bucketBytes`.
std::vector<std::vector<torch::Tensor>> buckets(const std::vector<torch::Tensor>& tensors, size_t bucketBytes) {
  std::map<std::pair<int, std::string>, std::vector<std::vector<torch::Tensor>>> byKind;
  std::map<std::pair<int, std::string>, size_t> filled;
  std::vector<std::pair<int, std::string>> order;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    auto kind = std::make_pair(static_cast<int>(t.scalar_type()), t.device().str());
    auto& list = byKind[kind];
    if (list.empty()) order.push_back(kind);
    size_t bytes = t.numel() * t.element_size();
    if (list.empty() || filled[kind] + bytes > bucketBytes) {
      list.emplace_back();
      filled[kind] = 0;
    }
    list.back().push_back(t);
    filled[kind] += bytes;
  }
  std::vector<std::vector<torch::Tensor>> out;
  for (const auto& kind : order) {
    for (auto& bucket : byKind[kind]) out.push_back(std::move(bucket));
  }
  return out;
}

// Gloo reduces float16/float32/float64 on CPU; bfloat16 travels as float32.
torch::Tensor flatten(const std::vector<torch::Tensor>& bucket) {
  std::vector<torch::Tensor> flat;
  flat.reserve(bucket.size());
  for (const auto& t : bucket) flat.push_back(t.detach().reshape(-1));
  torch::Tensor out = torch::cat(flat);
  if (out.scalar_type() == torch::kBFloat16) out = out.to(torch::kFloat);
  return out;
}

void unflatten(const torch::Tensor& flat, const std::vector<torch::Tensor>& bucket) {
  torch::NoGradGuard noGrad;
  int64_t offset = 0;
  for (const auto& t : bucket) {
    t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

}  // namespace

ProcessGroup::ProcessGroup(ProcessGroupOptions options) : options_(std::move(options)), impl_(new Impl) {}
ProcessGroup::~ProcessGroup() = default;

std::shared_ptr<ProcessGroup> ProcessGroup::connect(const ProcessGroupOptions& o) {
  if (o.worldSize < 1 || o.rank < 0 || o.rank >= o.worldSize) {
    throw std::invalid_argument("rank " + std::to_string(o.rank) + " is not in [0, world size " +
                                std::to_string(o.worldSize) + ")");
  }
  if (o.masterPort < 1 || o.masterPort > 65535) {
    throw std::invalid_argument("MASTER_PORT must be a port number (1-65535), got " + std::to_string(o.masterPort));
  }
  std::shared_ptr<ProcessGroup> pg(new ProcessGroup(o));
  try {
    c10d::TCPStoreOptions storeOptions;
    storeOptions.port = static_cast<uint16_t>(o.masterPort);
    storeOptions.isServer = o.rank == 0 && !o.agentStore;
    storeOptions.numWorkers = static_cast<size_t>(o.worldSize);
    storeOptions.waitWorkers = !o.agentStore;
    storeOptions.timeout = o.timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(o.masterAddr, storeOptions);
    if (!o.storePrefix.empty()) store = c10::make_intrusive<c10d::PrefixStore>(o.storePrefix, store);
    pg->impl_->store = store;
    pg->impl_->group = o.backend == "nccl" ? makeNccl(pg->impl_->store, o) : makeGloo(pg->impl_->store, o);
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    std::string first = e.what();
    first = first.substr(0, first.find('\n'));
    throw std::runtime_error("rank " + std::to_string(o.rank) + " of " + std::to_string(o.worldSize) +
                             ": the rendezvous at " + o.masterAddr + ":" + std::to_string(o.masterPort) +
                             " failed within " + seconds(o.timeout) + " (" + first +
                             "). Check that every rank was started with the same MASTER_ADDR, MASTER_PORT and "
                             "WORLD_SIZE, and that rank 0 can listen on that port.");
  }
  return pg;
}

void ProcessGroup::abort(const std::string& why) {
  if (failed_.empty()) failed_ = why;
}

void ProcessGroup::run(const char* what, const std::function<void()>& collective) {
  if (!failed_.empty()) throw std::runtime_error(failed_);
  try {
    collective();
  } catch (const std::exception& e) {
    std::string first = e.what();
    first = first.substr(0, first.find('\n'));
    abort("rank " + std::to_string(rank()) + " of " + std::to_string(worldSize()) + ": " + what +
          " failed: another rank stopped, crashed or did not answer within " + seconds(options_.timeout) + " (" +
          first + "). Every rank stops; resume them all with --resume latest.");
    throw std::runtime_error(failed_);
  }
}

void ProcessGroup::allReduceMean(const std::vector<torch::Tensor>& tensors) {
  if (worldSize() == 1) return;
  run("the gradient all-reduce", [&] {
    torch::NoGradGuard noGrad;
    for (const auto& bucket : buckets(tensors, options_.bucketBytes)) {
      std::vector<torch::Tensor> flat{flatten(bucket)};
      impl_->group->allreduce(flat)->wait();
      flat[0].div_(worldSize());
      unflatten(flat[0], bucket);
    }
  });
}

void ProcessGroup::broadcast(const std::vector<torch::Tensor>& tensors, int root) {
  if (worldSize() == 1) return;
  run("the weight broadcast", [&] {
    torch::NoGradGuard noGrad;
    for (const auto& bucket : buckets(tensors, options_.bucketBytes)) {
      std::vector<torch::Tensor> flat{flatten(bucket)};
      c10d::BroadcastOptions options;
      options.rootRank = root;
      impl_->group->broadcast(flat, options)->wait();
      unflatten(flat[0], bucket);
    }
  });
}

void ProcessGroup::barrier() {
  if (worldSize() == 1) return;
  run("the barrier", [&] { impl_->group->barrier()->wait(); });
}

std::vector<int64_t> ProcessGroup::allGather(int64_t value) {
  if (worldSize() == 1) return {value};
  std::vector<int64_t> out;
  run("the all-gather", [&] {
    std::vector<torch::Tensor> input{torch::tensor({value}, torch::kLong)};
    std::vector<std::vector<torch::Tensor>> output(1);
    for (int r = 0; r < worldSize(); ++r) output[0].push_back(torch::zeros({1}, torch::kLong));
    impl_->group->allgather(output, input)->wait();
    for (const auto& t : output[0]) out.push_back(t.item<int64_t>());
  });
  return out;
}

std::vector<double> ProcessGroup::allReduceMeanValues(const std::vector<double>& values) {
  if (worldSize() == 1 || values.empty()) return values;
  std::vector<double> out(values.size());
  run("the step all-reduce", [&] {
    std::vector<torch::Tensor> t{torch::tensor(values, torch::kDouble)};
    impl_->group->allreduce(t)->wait();
    t[0].div_(worldSize());
    for (size_t i = 0; i < values.size(); ++i) out[i] = t[0][static_cast<int64_t>(i)].item<double>();
  });
  return out;
}

int64_t hashTensors(const std::vector<torch::Tensor>& tensors) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
    const auto* bytes = static_cast<const uint8_t*>(c.data_ptr());
    const size_t n = c.numel() * c.element_size();
    for (size_t i = 0; i < n; ++i) {
      h ^= bytes[i];
      h *= 1099511628211ull;
    }
  }
  // 53 bits: exact as a JS number.
  return static_cast<int64_t>(h & ((1ull << 53) - 1));
}

}  // namespace sdtune::dist
