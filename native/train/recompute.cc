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

// The RNG states a block may draw from (CPU, and the current CUDA device).
struct RngState {
  torch::Tensor cpu;
#ifdef SDTUNE_WITH_CUDA
  torch::Tensor cuda;
  int device = -1;
#endif
  static RngState capture() {
    RngState s;
    s.cpu = at::detail::getDefaultCPUGenerator().get_state();
#ifdef SDTUNE_WITH_CUDA
    if (torch::cuda::is_available()) {
      s.device = c10::cuda::current_device();
      s.cuda = at::cuda::detail::getDefaultCUDAGenerator(s.device).get_state();
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

// What backward needs besides tensors. An IValue carries a C++ object only as a registered
// custom class; the function is held by value so callers' temporaries may go away.
struct RngHolder : torch::CustomClassHolder {
  explicit RngHolder(std::shared_ptr<RngState> s) : state(std::move(s)) {}
  std::shared_ptr<RngState> state;
};
struct FnHolder : torch::CustomClassHolder {
  explicit FnHolder(BlockFn f) : fn(std::move(f)) {}
  BlockFn fn;
};
const auto rngHolderClass = torch::class_<RngHolder>("sdtune", "RecomputeRngState");
const auto fnHolderClass = torch::class_<FnHolder>("sdtune", "RecomputeBlockFn");

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const BlockFn* fn,
                               std::vector<bool> defined) {
    auto rng = std::make_shared<RngState>(RngState::capture());
    ctx->saved_data["fn"] = c10::IValue(c10::make_intrusive<FnHolder>(*fn));
    ctx->saved_data["rng"] = c10::IValue(c10::make_intrusive<RngHolder>(rng));
    c10::List<bool> definedList;
    for (bool d : defined) definedList.push_back(d);
    ctx->saved_data["defined"] = definedList;
    ctx->save_for_backward(inputs.vec());
    std::vector<torch::Tensor> full = expand(inputs.vec(), defined);
    torch::NoGradGuard noGrad;
    return (*fn)(full);
  }

  static variable_list backward(AutogradContext* ctx, variable_list gradOutputs) {
    const BlockFn* fn = &ctx->saved_data["fn"].toCustomClass<FnHolder>()->fn;
    auto rng = ctx->saved_data["rng"].toCustomClass<RngHolder>()->state;
    auto definedList = ctx->saved_data["defined"].toBoolList();
    std::vector<bool> defined(definedList.begin(), definedList.end());
    variable_list saved = ctx->get_saved_variables();
    std::vector<torch::Tensor> detached;
    for (const auto& t : saved) detached.push_back(t.detach().requires_grad_(t.requires_grad()));

    std::vector<torch::Tensor> outputs;
    {
      // Replay the forward with the RNG as it was, then put the current state back.
      RngState now = RngState::capture();
      rng->restore();
      torch::AutoGradMode enable(true);
      outputs = (*fn)(expand(detached, defined));
      now.restore();
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
    result.push_back(torch::Tensor());  // fn
    result.push_back(torch::Tensor());  // defined
    return result;
  }

  // Re-inserts undefined inputs at their positions.
  static std::vector<torch::Tensor> expand(const std::vector<torch::Tensor>& compact,
                                           const std::vector<bool>& defined) {
    std::vector<torch::Tensor> full;
    size_t j = 0;
    for (bool d : defined) full.push_back(d ? compact[j++] : torch::Tensor());
    return full;
  }
};

}  // namespace

std::vector<torch::Tensor> checkpoint(const BlockFn& fn, const std::vector<torch::Tensor>& inputs) {
  bool anyGrad = false;
  for (const auto& t : inputs) anyGrad = anyGrad || (t.defined() && t.requires_grad());
  if (!torch::GradMode::is_enabled()) return fn(inputs);
  // Parameters inside fn may require grad even when no input does, so recompute whenever grad mode is on.
  (void)anyGrad;
  std::vector<torch::Tensor> compact;
  std::vector<bool> defined;
  for (const auto& t : inputs) {
    defined.push_back(t.defined());
    if (t.defined()) compact.push_back(t);
  }
  return CheckpointFunction::apply(at::TensorList(compact), &fn, defined);
}

torch::Tensor checkpoint1(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& fn,
                          const std::vector<torch::Tensor>& inputs) {
  BlockFn wrapped = [fn](const std::vector<torch::Tensor>& in) { return std::vector<torch::Tensor>{fn(in)}; };
  return checkpoint(wrapped, inputs).at(0);
}

}  // namespace sdtune::train
