#include "train/recompute.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/custom_class.h>

#ifdef SDTUNE_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace sdtune::train {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The RNG states a block may draw from: the CPU generator, and the generator of the CUDA
// device its inputs live on (none when they are all on the CPU).
struct RngState {
  torch::Tensor cpu;
  int device = -1;  // CUDA device index, or -1
#ifdef SDTUNE_WITH_CUDA
  torch::Tensor cuda;
#endif
  static RngState capture(int cudaDevice) {
    RngState s;
    {
      at::Generator generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      s.cpu = generator.get_state();
    }
    s.device = cudaDevice;
#ifdef SDTUNE_WITH_CUDA
    if (cudaDevice >= 0) {
      at::Generator generator = at::cuda::detail::getDefaultCUDAGenerator(cudaDevice);
      std::lock_guard<std::mutex> lock(generator.mutex());
      s.cuda = generator.get_state();
    }
#endif
    return s;
  }
  void restore() const {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(cpu);
#ifdef SDTUNE_WITH_CUDA
    if (device >= 0) {
      at::Generator generator = at::cuda::detail::getDefaultCUDAGenerator(device);
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(cuda);
    }
#endif
  }
};

// Everything backward needs besides the saved inputs. Held in saved_data as a capsule
// (no class registration, so two copies of the addon in one process cannot clash).
struct RecomputeState : torch::CustomClassHolder {
  BlockFn fn;                 // owned copy: the caller's function object may be gone by backward
  RngState rng;               // the RNG as it was when forward ran
  std::vector<bool> defined;  // which of the caller's inputs were defined
  bool dummy = false;         // the last compact input is a grad-requiring placeholder
};

// The CUDA device of the first CUDA input, or -1.
int cudaDeviceOf(at::TensorList inputs) {
  for (const auto& t : inputs) {
    if (t.defined() && t.is_cuda()) return t.get_device();
  }
  return -1;
}

// Puts an RNG state back when the scope ends, also when the replay throws.
struct RngRestore {
  RngState state;
  ~RngRestore() { state.restore(); }
};

// Re-inserts undefined inputs at their positions (and drops the placeholder).
std::vector<torch::Tensor> expand(const std::vector<torch::Tensor>& compact, const RecomputeState& state) {
  std::vector<torch::Tensor> full;
  size_t j = 0;
  for (bool d : state.defined) full.push_back(d ? compact[j++] : torch::Tensor());
  return full;
}

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, c10::intrusive_ptr<RecomputeState> state) {
    state->rng = RngState::capture(cudaDeviceOf(inputs));
    ctx->save_for_backward(inputs.vec());
    std::vector<torch::Tensor> full = expand(inputs.vec(), *state);
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    torch::NoGradGuard noGrad;
    return state->fn(full);
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    auto state = c10::static_intrusive_pointer_cast<RecomputeState>(ctx->saved_data["state"].toCapsule());
    variable_list saved = ctx->get_saved_variables();
    std::vector<torch::Tensor> detached;
    for (const auto& t : saved) detached.push_back(t.detach().requires_grad_(t.requires_grad()));

    std::vector<torch::Tensor> outputs;
    {
      // Replay the forward with the RNG as it was, then put the current state back.
      RngRestore now{RngState::capture(state->rng.device)};
      state->rng.restore();
      torch::AutoGradMode enable(true);
      outputs = state->fn(expand(detached, *state));
    }
    variable_list roots, grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].defined() && outputs[i].requires_grad() && gradOutputs[i].defined()) {
        roots.push_back(outputs[i]);
        grads.push_back(gradOutputs[i]);
      }
    }
    if (!roots.empty()) torch::autograd::backward(roots, grads);
    variable_list result;
    for (const auto& t : detached) result.push_back(t.requires_grad() ? t.grad() : torch::Tensor());
    result.push_back(torch::Tensor());  // state
    return result;
  }
};

std::vector<int64_t> contiguousStrides(at::IntArrayRef sizes) {
  std::vector<int64_t> strides(sizes.size(), 1);
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 2; d >= 0; --d) {
    strides[d] = strides[d + 1] * std::max<int64_t>(sizes[d + 1], 1);
  }
  return strides;
}

// Identity in forward and backward: groups the gradients of the block's inputs, and
// hands them back in the layout checkpoint's leaf inputs give them (AccumulateGrad's
// layout contract: the input's strides when it is dense, else contiguous). Same values
// in the same layout make every later reduction (e.g. a bias gradient) bitwise equal.
struct BoundaryFunction : public torch::autograd::Function<BoundaryFunction> {
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs) {
    variable_list out;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const auto& t = inputs[i];
      std::vector<int64_t> strides =
          t.is_non_overlapping_and_dense() ? t.strides().vec() : contiguousStrides(t.sizes());
      ctx->saved_data["sizes" + std::to_string(i)] = t.sizes().vec();
      ctx->saved_data["strides" + std::to_string(i)] = strides;
      out.push_back(t.alias());
    }
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    for (size_t i = 0; i < gradOutputs.size(); ++i) {
      auto& g = gradOutputs[i];
      if (!g.defined()) continue;
      auto sizes = ctx->saved_data["sizes" + std::to_string(i)].toIntVector();
      auto strides = ctx->saved_data["strides" + std::to_string(i)].toIntVector();
      if (g.sizes() == at::IntArrayRef(sizes) && g.strides() != at::IntArrayRef(strides)) {
        g = at::empty_strided(sizes, strides, g.options()).copy_(g);
      }
    }
    return gradOutputs;
  }
};

}  // namespace

std::vector<torch::Tensor> checkpoint(const BlockFn& fn, const std::vector<torch::Tensor>& inputs) {
  if (!torch::GradMode::is_enabled()) return fn(inputs);
  auto state = c10::make_intrusive<RecomputeState>();
  state->fn = fn;
  std::vector<torch::Tensor> compact;
  bool anyGrad = false;
  for (const auto& t : inputs) {
    state->defined.push_back(t.defined());
    if (!t.defined()) continue;
    compact.push_back(t);
    anyGrad = anyGrad || t.requires_grad();
  }
  // Parameters inside fn may require grad even when no input does (a frozen base with
  // adapters inside the block): a placeholder input keeps the block in the graph.
  if (!anyGrad) {
    compact.push_back(torch::zeros({1}).requires_grad_(true));
    state->dummy = true;
  }
  return CheckpointFunction::apply(at::TensorList(compact), state);
}

std::vector<torch::Tensor> block(const BlockFn& fn, const std::vector<torch::Tensor>& inputs, bool recompute) {
  if (!torch::GradMode::is_enabled()) return fn(inputs);
  if (recompute) return checkpoint(fn, inputs);
  std::vector<torch::Tensor> tracked;
  for (const auto& t : inputs) {
    if (t.defined() && t.requires_grad()) tracked.push_back(t);
  }
  if (tracked.empty()) return fn(inputs);
  variable_list passed = BoundaryFunction::apply(at::TensorList(tracked));
  std::vector<torch::Tensor> full;
  size_t j = 0;
  for (const auto& t : inputs) full.push_back(t.defined() && t.requires_grad() ? passed[j++] : t);
  return fn(full);
}

torch::Tensor block1(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& fn,
                     const std::vector<torch::Tensor>& inputs, bool recompute) {
  BlockFn wrapped = [fn](const std::vector<torch::Tensor>& in) { return std::vector<torch::Tensor>{fn(in)}; };
  return block(wrapped, inputs, recompute).at(0);
}

torch::Tensor checkpoint1(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& fn,
                          const std::vector<torch::Tensor>& inputs) {
  BlockFn wrapped = [fn](const std::vector<torch::Tensor>& in) { return std::vector<torch::Tensor>{fn(in)}; };
  return checkpoint(wrapped, inputs).at(0);
}

}  // namespace sdtune::train
