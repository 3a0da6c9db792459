#include "bindings/model_common.h"

#include <cmath>
#include <stdexcept>

#include <torch/version.h>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"
#include "models/state_dict.h"

namespace sdtune {

ModelLoadOptions readModelLoadOptions(const Napi::Object& o, const std::string& what) {
  ModelLoadOptions out;
  Napi::Value files = o.Get("files");
  if (!files.IsUndefined()) out.files = toStringVector(files, what + ".files");
  if (auto seed = getOptionalInt(o, "randomSeed", what)) {
    if (*seed < 0) throw std::invalid_argument(what + ".randomSeed must be >= 0");
    out.randomSeed = static_cast<uint64_t>(*seed);
  }
  if (out.files.empty() == !out.randomSeed.has_value()) {
    throw std::invalid_argument(what + ": give either files (safetensors weights) or randomSeed (random init)");
  }
  std::string dtype = getOptionalString(o, "dtype", what).value_or("float32");
  out.dtype = parseDtype(dtype);
  if (out.dtype != at::kFloat && out.dtype != at::kHalf && out.dtype != at::kBFloat16) {
    throw std::invalid_argument(what + ".dtype \"" + dtype + "\" is not a model dtype (float32, float16 or bfloat16)");
  }
  out.device = parseDevice(getOptionalString(o, "device", what).value_or("cpu"));
  if (out.dtype == at::kHalf && out.device.is_cpu()) {
    // libtorch 1.13 has no float16 matrix products on the CPU: fail at load, not at the first forward.
    try {
      auto probe = at::ones({2, 2}, at::TensorOptions().dtype(at::kHalf));
      (void)at::matmul(probe, probe);
    } catch (const c10::Error&) {
      throw std::invalid_argument(what + ".dtype \"float16\" cannot run on the CPU with this libtorch (" +
                                  std::string(TORCH_VERSION) + "): use bfloat16 or float32 there, float16 on CUDA");
    }
  }
  return out;
}

void finishLoad(torch::nn::Module& module, const ModelLoadOptions& options, const std::string& component,
                const std::function<std::string(const std::string&)>& rename) {
  if (options.files.empty()) {
    models::castModule(module, options.dtype, options.device);
  } else {
    models::LoadOptions load;
    load.dtype = options.dtype;
    load.device = options.device;
    load.rename = rename;
    models::loadWeights(module, options.files, load, component);
  }
  module.eval();
  models::setRequiresGrad(module, false);
}

Napi::Array parameterInfoToJs(Napi::Env env, torch::nn::Module& module) {
  auto out = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& item : module.named_parameters(true)) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", item.key());
    auto shape = Napi::Array::New(env);
    for (size_t d = 0; d < item.value().sizes().size(); ++d) {
      shape.Set(static_cast<uint32_t>(d), static_cast<double>(item.value().size(static_cast<int64_t>(d))));
    }
    o.Set("shape", shape);
    o.Set("dtype", dtypeName(item.value().scalar_type()));
    o.Set("requiresGrad", item.value().requires_grad());
    out.Set(i++, o);
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> stateDict(torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters(true)) out.emplace_back(item.key(), item.value().detach());
  for (const auto& item : module.named_buffers(true)) out.emplace_back(item.key(), item.value().detach());
  return out;
}

Napi::Value stateDictToJs(Napi::Env env, std::shared_ptr<void> keep, torch::nn::Module* module, std::mutex* mutex) {
  return PromiseWorker<NamedTensors>::run(
      env, "sdtune:model.stateDict",
      [keep, module, mutex]() {
        std::lock_guard<std::mutex> lock(*mutex);
        return stateDict(*module);
      },
      [](Napi::Env env, NamedTensors& tensors) -> Napi::Value { return namedTensorsToJs(env, tensors); });
}

at::Tensor readTimestep(const Napi::Value& value, const std::string& what) {
  if (value.IsNumber()) {
    double t = value.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(t)) throw std::invalid_argument(what + " must be finite");
    if (std::floor(t) == t) return at::scalar_tensor(static_cast<int64_t>(t), at::kLong);
    return at::scalar_tensor(t, at::kDouble);
  }
  return TensorHandle::unwrap(value, what);
}

}  // namespace sdtune
