// UNet from JS: load(options) -> Promise<UNet>; forward, lossAndGradients,
// gradient checkpointing, parameter listing, dispose. The config arrives resolved
// and validated by TypeScript (src/models/config.ts) and is copied into a plain
// UNetOptions on the JS thread.
#include <napi.h>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/model_common.h"
#include "bindings/tensor_handle.h"
#include "bindings/unet_handle.h"
#include "models/state_dict.h"

namespace sdtune {

namespace {

std::vector<bool> toBoolVector(const Napi::Value& value, const std::string& what) {
  if (!value.IsArray()) throw std::invalid_argument(what + " must be an array of booleans");
  auto array = value.As<Napi::Array>();
  std::vector<bool> out;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value v = array.Get(i);
    if (!v.IsBoolean()) throw std::invalid_argument(what + "[" + std::to_string(i) + "] must be a boolean");
    out.push_back(v.As<Napi::Boolean>().Value());
  }
  return out;
}

// The resolved config (NativeUNetConfig in src/native.ts) -> UNetOptions.
models::UNetOptions readUNetOptions(const Napi::Value& value) {
  const std::string what = "unet config";
  Napi::Object c = requireObject(value, what);
  models::UNetOptions o;
  o.inChannels = getInt(c, "inChannels", what);
  o.outChannels = getInt(c, "outChannels", what);
  o.blockOutChannels = toIntVector(c.Get("blockOutChannels"), what + ".blockOutChannels");
  o.downBlockTypes = toStringVector(c.Get("downBlockTypes"), what + ".downBlockTypes");
  o.upBlockTypes = toStringVector(c.Get("upBlockTypes"), what + ".upBlockTypes");
  o.midBlockType = getOptionalString(c, "midBlockType", what).value_or("");
  o.layersPerBlock = toIntVector(c.Get("layersPerBlock"), what + ".layersPerBlock");
  o.numAttentionHeads = toIntVector(c.Get("numAttentionHeads"), what + ".numAttentionHeads");
  o.crossAttentionDim = toIntVector(c.Get("crossAttentionDim"), what + ".crossAttentionDim");
  o.transformerLayersPerBlock = toIntVector(c.Get("transformerLayersPerBlock"), what + ".transformerLayersPerBlock");
  o.onlyCrossAttention = toBoolVector(c.Get("onlyCrossAttention"), what + ".onlyCrossAttention");
  o.useLinearProjection = getBool(c, "useLinearProjection", false, what);
  o.upcastAttention = getBool(c, "upcastAttention", false, what);
  o.normNumGroups = getInt(c, "normNumGroups", what);
  o.normEps = getNumber(c, "normEps", what);
  o.actFn = getString(c, "actFn", what);
  o.flipSinToCos = getBool(c, "flipSinToCos", true, what);
  o.freqShift = getNumber(c, "freqShift", what);
  o.resnetTimeScaleShift = getString(c, "resnetTimeScaleShift", what);
  o.centerInputSample = getBool(c, "centerInputSample", false, what);
  o.downsamplePadding = getInt(c, "downsamplePadding", what);
  o.midBlockScaleFactor = getNumber(c, "midBlockScaleFactor", what);
  o.dropout = getNumber(c, "dropout", what);
  o.convInKernel = getInt(c, "convInKernel", what);
  o.convOutKernel = getInt(c, "convOutKernel", what);
  o.timeEmbeddingDim = getOptionalInt(c, "timeEmbeddingDim", what).value_or(0);
  o.timeEmbeddingActFn = getOptionalString(c, "timeEmbeddingActFn", what).value_or("");
  o.timestepPostAct = getOptionalString(c, "timestepPostAct", what).value_or("");
  o.validate();
  return o;
}

// Inputs of one UNet call, moved to the model's dtype and device.
struct UNetInputs {
  at::Tensor sample, timestep, context;
  static UNetInputs read(const Napi::CallbackInfo& info) {
    return {TensorHandle::unwrap(info[0], "sample"), readTimestep(info[1], "timestep"),
            TensorHandle::unwrap(info[2], "encoderHiddenStates")};
  }
  void place(const UNetHolder& h) {
    sample = sample.to(h.device, h.dtype);
    context = context.to(h.device, h.dtype);
  }
};

struct LossResult {
  at::Tensor loss, output;
  std::vector<std::pair<std::string, at::Tensor>> grads;
};

struct IntermediatesResult {
  at::Tensor output;
  models::Intermediates intermediates;
};

Napi::Object tensorsToJs(Napi::Env env, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  Napi::Object out = Napi::Object::New(env);
  for (const auto& [name, t] : tensors) out.Set(name, TensorHandle::wrap(env, t));
  return out;
}

Napi::Value load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Napi::Object options = requireObject(info[0], "UNet.load options");
    models::UNetOptions config = readUNetOptions(options.Get("config"));
    ModelLoadOptions load = readModelLoadOptions(options, "UNet.load options");
    return PromiseWorker<std::shared_ptr<UNetHolder>>::run(
        env, "sdtune:unet.load",
        [config, load]() {
          auto holder = std::make_shared<UNetHolder>();
          holder->config = config;
          holder->dtype = load.dtype;
          holder->device = load.device;
          holder->module = buildModule(load, [&] { return models::UNet2DConditionModel(config); });
          finishLoad(*holder->module, load, "unet");
          return holder;
        },
        [](Napi::Env env, std::shared_ptr<UNetHolder>& holder) { return UNetHandle::wrap(env, holder); });
  });
}

}  // namespace

// ---- the handle

void UNetHandle::init(Napi::Env env, Napi::Object exports) {
  define(env, exports,
         {
             StaticMethod("load", &load),
             InstanceMethod<&UNetHandle::forward>("forward"),
             InstanceMethod<&UNetHandle::forwardWithIntermediates>("forwardWithIntermediates"),
             InstanceMethod<&UNetHandle::lossAndGradients>("lossAndGradients"),
             InstanceMethod<&UNetHandle::setGradientCheckpointing>("setGradientCheckpointing"),
             InstanceAccessor<&UNetHandle::gradientCheckpointing>("gradientCheckpointing"),
             InstanceMethod<&UNetHandle::parameterInfo>("parameterInfo"),
         });
}

// forward(sample, timestep, encoderHiddenStates) -> Promise<Tensor> (in the model's dtype)
Napi::Value UNetHandle::forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    UNetInputs in = UNetInputs::read(info);
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:unet.forward",
        [holder, in]() mutable {
          std::lock_guard<std::mutex> lock(holder->mutex);
          torch::NoGradGuard noGrad;
          in.place(*holder);
          return holder->module->forward(in.sample, in.timestep, in.context);
        },
        [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorHandle::wrap(env, t); });
  });
}

// forwardWithIntermediates(...) -> Promise<{output, intermediates: {name: Tensor}}>
Napi::Value UNetHandle::forwardWithIntermediates(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    UNetInputs in = UNetInputs::read(info);
    return PromiseWorker<IntermediatesResult>::run(
        env, "sdtune:unet.forwardWithIntermediates",
        [holder, in]() mutable {
          std::lock_guard<std::mutex> lock(holder->mutex);
          torch::NoGradGuard noGrad;
          in.place(*holder);
          IntermediatesResult r;
          r.output = holder->module->forward(in.sample, in.timestep, in.context, &r.intermediates);
          return r;
        },
        [](Napi::Env env, IntermediatesResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("output", TensorHandle::wrap(env, r.output));
          out.Set("intermediates", tensorsToJs(env, std::vector<std::pair<std::string, at::Tensor>>(
                                                        r.intermediates.begin(), r.intermediates.end())));
          return out;
        });
  });
}

// lossAndGradients(sample, timestep, ehs, target) -> Promise<{loss, output, grads}>:
// mean-squared error (in float32) and d loss / d parameter for every parameter.
Napi::Value UNetHandle::lossAndGradients(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    UNetInputs in = UNetInputs::read(info);
    at::Tensor target = TensorHandle::unwrap(info[3], "target");
    return PromiseWorker<LossResult>::run(
        env, "sdtune:unet.lossAndGradients",
        [holder, in, target]() mutable {
          std::lock_guard<std::mutex> lock(holder->mutex);
          torch::AutoGradMode enable(true);
          in.place(*holder);
          auto params = holder->module->named_parameters(true);
          std::vector<bool> wasTrainable;
          for (auto& p : params) {
            wasTrainable.push_back(p.value().requires_grad());
            p.value().mutable_grad() = at::Tensor();
            p.value().set_requires_grad(true);
          }
          LossResult r;
          try {
            at::Tensor output = holder->module->forward(in.sample, in.timestep, in.context);
            at::Tensor loss = torch::mse_loss(output.to(at::kFloat), target.to(output.device(), at::kFloat));
            loss.backward();
            r.loss = loss.detach();
            r.output = output.detach();
            for (auto& p : params) {
              if (p.value().grad().defined()) r.grads.emplace_back(p.key(), p.value().grad());
            }
          } catch (...) {
            size_t i = 0;
            for (auto& p : params) {
              p.value().mutable_grad() = at::Tensor();
              p.value().set_requires_grad(wasTrainable[i++]);
            }
            throw;
          }
          size_t i = 0;
          for (auto& p : params) {
            p.value().mutable_grad() = at::Tensor();
            p.value().set_requires_grad(wasTrainable[i++]);
          }
          return r;
        },
        [](Napi::Env env, LossResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("loss", TensorHandle::wrap(env, r.loss));
          out.Set("output", TensorHandle::wrap(env, r.output));
          out.Set("grads", tensorsToJs(env, r.grads));
          return out;
        });
  });
}

void UNetHandle::setGradientCheckpointing(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBoolean())
    throw Napi::TypeError::New(env, "setGradientCheckpointing(enabled): enabled must be a boolean");
  live(env)->module->gradientCheckpointing = info[0].As<Napi::Boolean>().Value();
}

Napi::Value UNetHandle::gradientCheckpointing(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), live(info.Env())->module->gradientCheckpointing.load());
}

Napi::Value UNetHandle::parameterInfo(const Napi::CallbackInfo& info) {
  return parameterInfoToJs(info.Env(), *live(info.Env())->module);
}

SDTUNE_REGISTER_BINDING(unet, UNetHandle::init);

}  // namespace sdtune
