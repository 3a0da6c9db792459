// Pieces shared by the model bindings (UNet, VAE, ...): load options read on the
// JS thread, the weight loading done on the worker, parameter listings.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "nn/linear.h"

namespace sdtune {

struct ModelLoadOptions {
  std::vector<std::string> files;      // safetensors files (a sharded checkpoint is several)
  std::optional<uint64_t> randomSeed;  // instead of files: seeded random init (tests, benchmarks)
  at::ScalarType dtype = at::kFloat;   // float32 | float16 | bfloat16
  at::Device device = at::kCPU;
};

// Reads {files, randomSeed, dtype, device} from a JS load-options object; `what` names it in errors.
ModelLoadOptions readModelLoadOptions(const Napi::Object& options, const std::string& what);

// Builds a module for these options: seeded random init when asked for, otherwise
// without the (wasted) random init of layers whose weights the checkpoint replaces.
template <typename Make>
auto buildModule(const ModelLoadOptions& options, Make make) -> decltype(make()) {
  if (options.randomSeed) {
    torch::manual_seed(*options.randomSeed);
    return make();
  }
  nn::SkipInitGuard skip;
  return make();
}

// Fills the module from options.files (or casts the random init), then puts it in eval
// mode with every parameter frozen. `component` names it in errors ("unet", "vae").
void finishLoad(torch::nn::Module& module, const ModelLoadOptions& options, const std::string& component,
                const std::function<std::string(const std::string&)>& rename = nullptr);

// [{name, shape, dtype, requiresGrad}] for every parameter, in module order.
Napi::Array parameterInfoToJs(Napi::Env env, torch::nn::Module& module);

// Every parameter and buffer by checkpoint key, as detached views of the live weights
// (no copy; fused LoRA weights show as fused, unfused adapters not at all).
std::vector<std::pair<std::string, at::Tensor>> stateDict(torch::nn::Module& module);

// stateDict() from JS: a Promise of [[name, Tensor], ...], taken under `mutex` off the JS thread.
// `keep` holds the model alive until the worker ends.
Napi::Value stateDictToJs(Napi::Env env, std::shared_ptr<void> keep, torch::nn::Module* module, std::mutex* mutex);

// A timestep from JS: a Tensor, or a number (integers become int64, others float64, as diffusers).
at::Tensor readTimestep(const Napi::Value& value, const std::string& what);

}  // namespace sdtune
