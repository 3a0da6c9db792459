// TextEncoder from JS: load a CLIPTextModel checkpoint, run it (Promise), toggle
// gradient checkpointing, dispose. See text_encoder_handle.h for C++ callers.
#include <napi.h>

#include "bindings/async.h"
#include "bindings/clip_options.h"
#include "bindings/common.h"
#include "bindings/model_common.h"
#include "bindings/tensor_handle.h"
#include "bindings/text_encoder_handle.h"
#include "models/clip.h"

namespace sdtune {

namespace {

// forward()'s options, copied off the JS object before the worker runs.
models::CLIPTextForwardOptions readForwardOptions(const Napi::Value& value) {
  models::CLIPTextForwardOptions o;
  if (value.IsUndefined() || value.IsNull()) return o;
  Napi::Object object = requireObject(value, "options");
  o.outputHiddenStates = getBool(object, "outputHiddenStates", false, "options");
  o.clipSkip = getOptionalInt(object, "clipSkip", "options").value_or(0);
  Napi::Value mask = object.Get("attentionMask");
  if (!mask.IsUndefined() && !mask.IsNull()) o.attentionMask = TensorHandle::unwrap(mask, "options.attentionMask");
  return o;
}

struct Gradients {
  double loss = 0;
  std::vector<std::pair<std::string, at::Tensor>> grads;
};

}  // namespace

void TextEncoderHandle::init(Napi::Env env, Napi::Object exports) {
  define(env, exports,
         {
             StaticMethod<&TextEncoderHandle::load>("load"),
             InstanceMethod<&TextEncoderHandle::forward>("forward"),
             InstanceMethod<&TextEncoderHandle::lossAndGradients>("lossAndGradients"),
             InstanceMethod<&TextEncoderHandle::setGradientCheckpointing>("setGradientCheckpointing"),
             InstanceAccessor<&TextEncoderHandle::gradientCheckpointing>("gradientCheckpointing"),
         });
}

// load({config, files, dtype?, device?, ignorePrefixes?}) -> Promise<TextEncoder>;
// {config, randomSeed, dtype?, device?} instead of files: a seeded random init.
Napi::Value TextEncoderHandle::load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Napi::Object options = requireObject(info[0], "options");
    models::CLIPTextOptions config = readClipTextOptions(options.Get("config"), "options.config");
    if (auto seed = getOptionalInt(options, "randomSeed", "options")) {
      if (*seed < 0) throw std::invalid_argument("options.randomSeed must be >= 0");
      models::CLIPLoadOptions load;
      load.dtype = parseDtype(getOptionalString(options, "dtype", "options").value_or("float32"));
      load.device = parseDevice(getOptionalString(options, "device", "options").value_or("cpu"));
      return PromiseWorker<std::shared_ptr<TextEncoderHolder>>::run(
          env, "sdtune:TextEncoder.load",
          [config, load, seed = static_cast<uint64_t>(*seed)]() {
            auto holder = std::make_shared<TextEncoderHolder>();
            holder->model = models::randomCLIPTextModel(config, seed, load);
            holder->dtype = load.dtype;
            holder->device = load.device;
            return holder;
          },
          [](Napi::Env env, std::shared_ptr<TextEncoderHolder>& holder) { return wrap(env, holder); });
    }
    ClipLoadRequest request = readClipLoadRequest(options, "text_encoder");
    return PromiseWorker<std::shared_ptr<TextEncoderHolder>>::run(
        env, "sdtune:TextEncoder.load",
        [config, request]() {
          auto holder = std::make_shared<TextEncoderHolder>();
          holder->model = models::loadCLIPTextModel(config, request.files, request.load);
          holder->dtype = request.load.dtype;
          holder->device = request.load.device;
          return holder;
        },
        [](Napi::Env env, std::shared_ptr<TextEncoderHolder>& holder) { return wrap(env, holder); });
  });
}

// forward(inputIds, {outputHiddenStates?, attentionMask?, clipSkip?})
//   -> Promise<{lastHiddenState, hiddenStates?, pooledOutput}>
Napi::Value TextEncoderHandle::forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    at::Tensor ids = TensorHandle::unwrap(info[0], "inputIds");
    models::CLIPTextForwardOptions options = readForwardOptions(info[1]);
    return PromiseWorker<models::CLIPTextOutput>::run(
        env, "sdtune:TextEncoder.forward",
        [holder, ids, options]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          holder->sync();
          torch::NoGradGuard noGrad;
          return holder->model->forward(ids, options);
        },
        [options](Napi::Env env, models::CLIPTextOutput& out) -> Napi::Value {
          Napi::Object result = Napi::Object::New(env);
          result.Set("lastHiddenState", TensorHandle::wrap(env, out.lastHiddenState));
          if (options.outputHiddenStates) {
            auto states = Napi::Array::New(env, out.hiddenStates.size());
            for (size_t i = 0; i < out.hiddenStates.size(); ++i) {
              states.Set(static_cast<uint32_t>(i), TensorHandle::wrap(env, out.hiddenStates[i]));
            }
            result.Set("hiddenStates", states);
          }
          result.Set("pooledOutput", TensorHandle::wrap(env, out.pooledOutput));
          return result;
        });
  });
}

// lossAndGradients(inputIds, {parameters, attentionMask?, clipSkip?}) -> Promise<{loss, gradients}>
// loss = sum(lastHiddenState) in float32; gradients of the named parameters only (the
// rest stay frozen). For gradient checks (e.g. checkpointing on and off agree).
Napi::Value TextEncoderHandle::lossAndGradients(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    at::Tensor ids = TensorHandle::unwrap(info[0], "inputIds");
    Napi::Object object = requireObject(info[1], "options");
    std::vector<std::string> names = toStringVector(object.Get("parameters"), "options.parameters");
    models::CLIPTextForwardOptions options = readForwardOptions(object);
    options.outputHiddenStates = false;
    return PromiseWorker<Gradients>::run(
        env, "sdtune:TextEncoder.lossAndGradients",
        [holder, ids, options, names]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          holder->sync();
          auto params = holder->model->named_parameters(/*recurse=*/true);
          std::vector<at::Tensor> chosen;
          for (const auto& name : names) {
            auto* p = params.find(name);
            if (!p) throw std::invalid_argument("text_encoder has no parameter \"" + name + "\"");
            chosen.push_back(*p);
          }
          std::vector<bool> before;
          for (auto& p : chosen) {
            before.push_back(p.requires_grad());
            p.set_requires_grad(true);
            p.mutable_grad() = at::Tensor();
          }
          Gradients result;
          try {
            torch::AutoGradMode enable(true);
            at::Tensor loss = holder->model->forward(ids, options).lastHiddenState.to(at::kFloat).sum();
            loss.backward();
            result.loss = loss.item<double>();
            for (size_t i = 0; i < chosen.size(); ++i) {
              at::Tensor g = chosen[i].grad();
              result.grads.emplace_back(names[i], g.defined() ? g.clone() : at::zeros_like(chosen[i]));
            }
          } catch (...) {
            for (size_t i = 0; i < chosen.size(); ++i) {
              chosen[i].mutable_grad() = at::Tensor();
              chosen[i].set_requires_grad(before[i]);
            }
            throw;
          }
          for (size_t i = 0; i < chosen.size(); ++i) {
            chosen[i].mutable_grad() = at::Tensor();
            chosen[i].set_requires_grad(before[i]);
          }
          return result;
        },
        [](Napi::Env env, Gradients& g) -> Napi::Value {
          Napi::Object result = Napi::Object::New(env);
          result.Set("loss", Napi::Number::New(env, g.loss));
          Napi::Object grads = Napi::Object::New(env);
          for (auto& [name, t] : g.grads) grads.Set(name, TensorHandle::wrap(env, t));
          result.Set("gradients", grads);
          return result;
        });
  });
}

void TextEncoderHandle::setGradientCheckpointing(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsBoolean()) throw Napi::TypeError::New(env, "setGradientCheckpointing: expected a boolean");
  live(env)->gradientCheckpointing.store(info[0].As<Napi::Boolean>().Value());
}

Napi::Value TextEncoderHandle::gradientCheckpointing(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), live(info.Env())->gradientCheckpointing.load());
}

SDTUNE_REGISTER_BINDING(text_encoder, TextEncoderHandle::init);

}  // namespace sdtune
