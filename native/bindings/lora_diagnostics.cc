// Diagnostics of the LoRA bindings, for tests and tools (training steps are native): a UNet's
// loss and adapter gradients, and one layer's forward and backward with its adapters.
#include <napi.h>

#include "bindings/common.h"
#include "bindings/lora_model.h"
#include "bindings/model_common.h"
#include "bindings/tensor_handle.h"
#include "bindings/unet_handle.h"
#include "nn/linear.h"
#include "nn/lora.h"

namespace sdtune {

namespace {

namespace lora = nn::lora;

struct AdapterGradients {
  at::Tensor loss, output;
  NamedTensors grads;
  std::vector<std::string> frozenWithGrad;  // base parameters that got a gradient (should be none)
};

// unetLossAndGradients(unet, sample, timestep, ehs, target, name) -> Promise<{loss, output, grads, frozenWithGrad}>
// mse(unet(...), target) in float32 and its gradients for adapter `name`'s parameters; the base
// stays as it is (frozen). A diagnostic for tests and tools; training steps are native.
Napi::Value unetLossAndGradients(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = UNetHandle::unwrap(info[0], "unet");
    at::Tensor sample = TensorHandle::unwrap(info[1], "sample");
    at::Tensor timestep = readTimestep(info[2], "timestep");
    at::Tensor context = TensorHandle::unwrap(info[3], "encoderHiddenStates");
    at::Tensor target = TensorHandle::unwrap(info[4], "target");
    std::string name = readName(info[5]);
    return PromiseWorker<AdapterGradients>::run(
        env, "sdtune:lora.unetLossAndGradients",
        [holder, sample, timestep, context, target, name]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          auto& unet = *holder->module;
          NamedTensors params = lora::parameters(unet, name);
          for (auto& [n, p] : params) {
            if (!p.requires_grad()) throw std::invalid_argument("LoRA \"" + name + "\" is not trainable");
            p.mutable_grad() = at::Tensor();
          }
          torch::AutoGradMode enable(true);
          AdapterGradients r;
          at::Tensor output = unet.forward(sample.to(holder->device, holder->dtype), timestep,
                                           context.to(holder->device, holder->dtype));
          at::Tensor loss = torch::mse_loss(output.to(at::kFloat), target.to(output.device(), at::kFloat));
          loss.backward();
          r.loss = loss.detach();
          r.output = output.detach();
          for (auto& [n, p] : params) {
            r.grads.emplace_back(n, p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
            p.mutable_grad() = at::Tensor();
          }
          for (const auto& item : unet.named_parameters(true)) {
            if (item.value().grad().defined()) r.frozenWithGrad.push_back(item.key());
          }
          return r;
        },
        [](Napi::Env env, AdapterGradients& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("loss", TensorHandle::wrap(env, r.loss));
          out.Set("output", TensorHandle::wrap(env, r.output));
          out.Set("grads", namedTensorsToJs(env, r.grads));
          auto frozen = Napi::Array::New(env, r.frozenWithGrad.size());
          for (size_t i = 0; i < r.frozenWithGrad.size(); ++i)
            frozen.Set(static_cast<uint32_t>(i), r.frozenWithGrad[i]);
          out.Set("frozenWithGrad", frozen);
          return out;
        });
  });
}

struct LayerResult {
  at::Tensor output;
  NamedTensors grads;
};

// layerForward(model, path, name, x, gradOutput) -> Promise<{output, grads}>: one Linear / Conv2d
// layer's forward (training mode off) with its adapters, then backward of sum(output * gradOutput)
// into adapter `name`'s trainable tensors of that layer ("": no gradients). A diagnostic: checks one layer against
// reference code (tests/golden).
Napi::Value layerForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    std::string path = readName(info[1]);
    std::string name = readName(info[2]);
    at::Tensor x = TensorHandle::unwrap(info[3], "x");
    at::Tensor gradOutput = TensorHandle::unwrap(info[4], "gradOutput");
    return runLocked<LayerResult>(
        env, "sdtune:lora.layerForward", model,
        [path, name, x, gradOutput](torch::nn::Module& m) {
          std::shared_ptr<torch::nn::Module> layer;
          for (auto& l : lora::adaptableLayers(m)) {
            if (l.path == path) layer = l.module;
          }
          if (!layer) throw std::invalid_argument("layerForward: no Linear or Conv2d layer at \"" + path + "\"");
          NamedTensors params;  // none for name "" (the layer as it is)
          for (auto& [n, p] : name.empty() ? NamedTensors{} : lora::parameters(m, name)) {
            if (n.rfind(path + ".", 0) == 0 && p.requires_grad()) params.emplace_back(n, p);
          }
          for (auto& [n, p] : params) p.mutable_grad() = at::Tensor();
          torch::AutoGradMode enable(true);
          at::Tensor y;
          if (auto* linear = dynamic_cast<nn::LinearImpl*>(layer.get())) y = linear->forward(x);
          if (auto* conv = dynamic_cast<nn::Conv2dImpl*>(layer.get())) y = conv->forward(x);
          LayerResult r{y.detach(), {}};
          if (y.requires_grad()) (y * gradOutput.to(y.dtype())).sum().backward();
          for (auto& [n, p] : params) {
            r.grads.emplace_back(n, p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
            p.mutable_grad() = at::Tensor();
          }
          return r;
        },
        [](Napi::Env env, LayerResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("output", TensorHandle::wrap(env, r.output));
          out.Set("grads", namedTensorsToJs(env, r.grads));
          return out;
        });
  });
}

}  // namespace

void addLoraDiagnostics(Napi::Env env, Napi::Object ns) {
  ns.Set("unetLossAndGradients", Napi::Function::New(env, unetLossAndGradients));
  ns.Set("layerForward", Napi::Function::New(env, layerForward));
}

}  // namespace sdtune
