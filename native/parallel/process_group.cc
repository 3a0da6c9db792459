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

#include <torch/csrc/autograd/utils/lambda_post_hook.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>

namespace sdtune::dist {

// The gradient all-reduce overlapped with the backward, as DDP's reducer does it: each trained
// parameter's gradient accumulator gets a hook; when every gradient of a bucket has arrived, its
// all-reduce is launched (buckets strictly in order, so every rank issues the same collectives in
// the same order), and after the backward the works are waited for and the means copied back.
constexpr size_t kNoBucket = static_cast<size_t>(-1);

struct Overlap {
  std::vector<torch::Tensor> params;
  std::vector<std::vector<size_t>> buckets;  // parameter indices, in launch order
  std::vector<size_t> bucketOf;              // parameter -> bucket
  // Kept alive: a leaf's accumulator (which carries the hook) is otherwise rebuilt each forward.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::mutex mutex;
  bool armed = false;           // a syncing backward is running
  bool late = false;            // a gradient arrived after its bucket was launched (used twice)
  std::vector<size_t> waiting;  // per bucket: gradients not arrived yet
  std::vector<bool> arrived;    // per parameter
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  std::vector<torch::Tensor> flats;
  size_t next = 0;  // next bucket to launch
};

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::shared_ptr<Overlap> overlap;
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

// Indices of `tensors`, taken in `order`, cut into buckets of about `bucketBytes` of one dtype and
// device each (undefined and empty tensors left out); all buckets of the first kind seen come first.
std::vector<std::vector<size_t>> bucketIndices(const std::vector<torch::Tensor>& tensors,
                                               const std::vector<size_t>& order, size_t bucketBytes) {
  std::map<std::pair<int, std::string>, std::vector<std::vector<size_t>>> byKind;
  std::map<std::pair<int, std::string>, size_t> filled;
  std::vector<std::pair<int, std::string>> kinds;
  for (size_t i : order) {
    const torch::Tensor& t = tensors[i];
    if (!t.defined() || t.numel() == 0) continue;
    auto kind = std::make_pair(static_cast<int>(t.scalar_type()), t.device().str());
    auto& list = byKind[kind];
    if (list.empty()) kinds.push_back(kind);
    size_t bytes = t.numel() * t.element_size();
    if (list.empty() || filled[kind] + bytes > bucketBytes) {
      list.emplace_back();
      filled[kind] = 0;
    }
    list.back().push_back(i);
    filled[kind] += bytes;
  }
  std::vector<std::vector<size_t>> out;
  for (const auto& kind : kinds) {
    for (auto& bucket : byKind[kind]) out.push_back(std::move(bucket));
  }
  return out;
}

// The tensors themselves, in their own order, bucketed as bucketIndices does.
std::vector<std::vector<torch::Tensor>> buckets(const std::vector<torch::Tensor>& tensors, size_t bucketBytes) {
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::vector<std::vector<torch::Tensor>> out;
  for (const auto& indices : bucketIndices(tensors, order, bucketBytes)) {
    out.emplace_back();
    for (size_t i : indices) out.back().push_back(tensors[i]);
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
  run("the gradient all-reduce", [&] { allReduceMeanUnguarded(tensors); });
}

void ProcessGroup::allReduceMeanUnguarded(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard noGrad;
  for (const auto& bucket : buckets(tensors, options_.bucketBytes)) {
    std::vector<torch::Tensor> flat{flatten(bucket)};
    impl_->group->allreduce(flat)->wait();
    flat[0].div_(worldSize());
    unflatten(flat[0], bucket);
  }
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

namespace {

// One bucket's gradients as one flat tensor (zeros for a parameter the loss did not reach).
torch::Tensor flatGradients(const Overlap& o, size_t b) {
  std::vector<torch::Tensor> grads;
  for (size_t i : o.buckets[b]) {
    const torch::Tensor& g = o.params[i].grad();
    grads.push_back(g.defined() ? g : torch::zeros_like(o.params[i]));
  }
  return flatten(grads);
}

// Launches every bucket, in order, whose gradients have all arrived (all of them when `all`).
void launchReady(Overlap& o, c10d::ProcessGroup& group, bool all) {
  torch::NoGradGuard noGrad;
  while (o.next < o.buckets.size() && (all || o.waiting[o.next] == 0)) {
    std::vector<torch::Tensor> flat{flatGradients(o, o.next)};
    o.works[o.next] = group.allreduce(flat);
    o.flats[o.next] = flat[0];
    ++o.next;
  }
}

void arrive(Overlap& o, c10d::ProcessGroup& group, size_t i) {
  std::lock_guard<std::mutex> lock(o.mutex);
  if (!o.armed) return;  // an accumulating micro-step, or no data parallel backward
  if (o.arrived[i]) {
    o.late = true;
    return;
  }
  o.arrived[i] = true;
  if (o.bucketOf[i] != kNoBucket && --o.waiting[o.bucketOf[i]] == 0) launchReady(o, group, false);
}

}  // namespace

void ProcessGroup::attachReducer(const std::vector<torch::Tensor>& params) {
  impl_->overlap.reset();  // the old hooks hold it weakly: they turn into no-ops
  if (worldSize() == 1 || params.empty()) return;
  auto o = std::make_shared<Overlap>();
  o->params = params;
  // Reverse parameter order: roughly the order the backward produces the gradients.
  std::vector<size_t> reversed;
  for (size_t i = params.size(); i-- > 0;) reversed.push_back(i);
  o->buckets = bucketIndices(params, reversed, options_.bucketBytes);
  o->bucketOf.assign(params.size(), kNoBucket);  // an empty parameter is in none
  for (size_t b = 0; b < o->buckets.size(); ++b) {
    for (size_t i : o->buckets[b]) o->bucketOf[i] = b;
  }
  c10d::ProcessGroup* group = impl_->group.get();
  std::weak_ptr<Overlap> weak = o;
  for (size_t i = 0; i < params.size(); ++i) {
    auto accumulator = torch::autograd::impl::grad_accumulator(params[i]);
    TORCH_CHECK(accumulator, "attachReducer: parameter ", i, " is not a trainable leaf");
    accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [weak, group, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          if (auto o = weak.lock()) arrive(*o, *group, i);
          return outputs;
        }));
    o->accumulators.push_back(std::move(accumulator));
  }
  impl_->overlap = std::move(o);
}

bool ProcessGroup::backwardOverlapped(const torch::Tensor& loss) {
  std::shared_ptr<Overlap> o = impl_->overlap;
  if (!o) {
    loss.backward();
    return false;
  }
  bool overlapped = true;
  run("the gradient all-reduce", [&] {
    {
      std::lock_guard<std::mutex> lock(o->mutex);
      o->armed = true;
      o->late = false;
      o->next = 0;
      o->arrived.assign(o->params.size(), false);
      o->waiting.clear();
      for (const auto& b : o->buckets) o->waiting.push_back(b.size());
      o->works.assign(o->buckets.size(), {});
      o->flats.assign(o->buckets.size(), {});
    }
    try {
      loss.backward();
    } catch (...) {
      std::lock_guard<std::mutex> lock(o->mutex);
      o->armed = false;
      for (auto& w : o->works) {  // nothing in flight may outlive its tensors
        try {
          if (w) w->wait();
        } catch (...) {
          // the backward's own error is the one to report
        }
      }
      throw;
    }
    std::lock_guard<std::mutex> lock(o->mutex);
    o->armed = false;
    launchReady(*o, *impl_->group, true);  // buckets holding parameters the loss did not reach
    for (auto& w : o->works) w->wait();
    if (o->late) {
      // A gradient grew after its bucket left: the gradients here are still this rank's own, whole;
      // average them after the backward instead (the graph, hence this path, is the same on every rank).
      std::vector<torch::Tensor> grads;
      for (const auto& p : o->params) grads.push_back(p.grad());
      allReduceMeanUnguarded(grads);
      overlapped = false;
      return;
    }
    torch::NoGradGuard noGrad;
    for (size_t b = 0; b < o->buckets.size(); ++b) {
      torch::Tensor mean = o->flats[b].div_(worldSize());
      int64_t offset = 0;
      for (size_t i : o->buckets[b]) {
        torch::Tensor& p = o->params[i];
        torch::Tensor slice = mean.narrow(0, offset, p.numel()).view(p.sizes());
        offset += p.numel();
        if (p.grad().defined()) {
          p.mutable_grad().copy_(slice);
        } else if (slice.count_nonzero().item<int64_t>() > 0) {
          p.mutable_grad() = slice.to(p.scalar_type()).clone();
        }
      }
    }
  });
  return overlapped;
}

}  // namespace sdtune::dist
