// LoRA adapters on loaded models from JS (the `lora` namespace): attach weights from
// files, create trainable adapters, scales and the active set, fuse / unfuse, remove,
// read back. Each call takes a UNet, TextEncoder, ClipModel or VAE handle and runs
// under that model's mutex off the JS thread. The logic is nn/lora.h; the diagnostics
// (unetLossAndGradients, layerForward) are in lora_diagnostics.cc.
#include <napi.h>

#include "bindings/async.h"
#include "bindings/clip_handle.h"
#include "bindings/common.h"
#include "bindings/generator.h"
#include "bindings/lora_model.h"
#include "bindings/model_common.h"
#include "bindings/tensor_handle.h"
#include "bindings/text_encoder_handle.h"
#include "bindings/unet_handle.h"
#include "bindings/vae_handle.h"
#include "nn/lora.h"
#include "nn/lora_types.h"

namespace sdtune {

ModelRef readModel(const Napi::Value& value, const std::string& what) {
  Napi::Env env = value.Env();
  auto& ctors = addonData(env).constructors;
  auto is = [&](const char* name) {
    auto it = ctors.find(name);
    return value.IsObject() && it != ctors.end() && value.As<Napi::Object>().InstanceOf(it->second.Value());
  };
  if (is("UNet")) {
    auto h = UNetHandle::unwrap(value, what);
    return {h, h->module.ptr().get(), &h->mutex};
  }
  if (is("TextEncoder")) {
    auto h = TextEncoderHandle::unwrap(value, what);
    return {h, h->model.ptr().get(), &h->mutex};
  }
  if (is("ClipModel")) {
    auto h = ClipModelHandle::unwrap(value, what);
    return {h, h->model.ptr().get(), &h->mutex};
  }
  if (is("VAE")) {
    auto h = VAEHandle::unwrap(value, what);
    return {h, h->module.ptr().get(), &h->mutex};
  }
  throw Napi::TypeError::New(env, what + " must be a UNet, TextEncoder, ClipModel or VAE handle");
}

std::string readName(const Napi::Value& value) {
  if (!value.IsString()) throw Napi::TypeError::New(value.Env(), "name must be a string");
  return value.As<Napi::String>().Utf8Value();
}

namespace {

namespace lora = nn::lora;

Napi::Object optionsOrEmpty(const Napi::Value& value, const std::string& what) {
  if (value.IsUndefined() || value.IsNull()) return Napi::Object::New(value.Env());
  return requireObject(value, what);
}

// A typed adapter's {type?, factors?} (absent: a plain LoRA).
void readTyped(const Napi::Object& o, const std::string& what, lora::AdapterWeights& a) {
  a.type = lora::parseAdapterType(getOptionalString(o, "type", what).value_or("lora"));
  Napi::Value factors = o.Get("factors");
  if (factors.IsUndefined() || factors.IsNull()) return;
  Napi::Object f = requireObject(factors, what + ".factors");
  Napi::Array keys = f.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    std::string key = keys.Get(i).As<Napi::String>().Utf8Value();
    a.factors[key] = TensorHandle::unwrap(f.Get(key), what + ".factors." + key);
  }
}

Napi::Value undefinedResult(Napi::Env env, bool&) {
  return env.Undefined();
}

Napi::Value numberResult(Napi::Env env, int64_t& n) {
  return Napi::Number::New(env, static_cast<double>(n));
}

// modules(model) -> [{path, kind}] for every submodule (kind "linear", "conv2d" or a class name).
Napi::Value modules(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    auto kinds = lora::moduleKinds(*model.module);  // the module tree never changes after load
    auto out = Napi::Array::New(env, kinds.size());
    for (size_t i = 0; i < kinds.size(); ++i) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("path", kinds[i].first);
      o.Set("kind", kinds[i].second);
      out.Set(static_cast<uint32_t>(i), o);
    }
    return out;
  });
}

// attach(model, name, [{path, down?, up?, alpha, type?, factors?}], {multiplier?, dropout?, trainable?, keyPrefix?})
//   -> Promise<void>; down / up for lora and dora, factors {name: Tensor} for dora (magnitude), loha, lokr
Napi::Value attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    std::string name = readName(info[1]);
    if (!info[2].IsArray()) throw Napi::TypeError::New(env, "adapters must be an array of {path, down, up, alpha}");
    auto array = info[2].As<Napi::Array>();
    std::vector<lora::AdapterWeights> adapters;
    for (uint32_t i = 0; i < array.Length(); ++i) {
      const std::string what = "adapters[" + std::to_string(i) + "]";
      Napi::Object o = requireObject(array.Get(i), what);
      lora::AdapterWeights a{getString(o, "path", what), {}, {}, getNumber(o, "alpha", what)};
      readTyped(o, what, a);
      if (a.type == nn::AdapterType::Lora || a.type == nn::AdapterType::Dora) {
        a.down = TensorHandle::unwrap(o.Get("down"), what + ".down");
        a.up = TensorHandle::unwrap(o.Get("up"), what + ".up");
      }
      adapters.push_back(std::move(a));
    }
    Napi::Object o = optionsOrEmpty(info[3], "options");
    lora::AttachOptions options;
    options.multiplier = getOptionalNumber(o, "multiplier", "options").value_or(1.0);
    options.dropout = getOptionalNumber(o, "dropout", "options").value_or(0.0);
    options.trainable = getBool(o, "trainable", false, "options");
    options.keyPrefix = getOptionalString(o, "keyPrefix", "options").value_or("");
    return runLocked<bool>(
        env, "sdtune:lora.attach", model,
        [name, adapters, options](torch::nn::Module& m) {
          lora::attach(m, name, adapters, options);
          return true;
        },
        undefinedResult);
  });
}

lora::Init parseInit(const std::string& init) {
  if (init == "gaussian") return lora::Init::Gaussian;
  if (init == "kaiming") return lora::Init::Kaiming;
  if (init == "random") return lora::Init::Random;
  throw std::invalid_argument("options.init \"" + init + "\" must be gaussian, kaiming or random");
}

// create(model, name, {paths, rank, alpha, dropout?, multiplier?, init?, generator?, keyPrefix?, type?, factor?,
//   decomposeBoth?})
//   -> Promise<[name, Tensor][]> (the live trainable tensors)
Napi::Value create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    std::string name = readName(info[1]);
    Napi::Object o = requireObject(info[2], "options");
    lora::CreateOptions options;
    options.paths = toStringVector(o.Get("paths"), "options.paths");
    options.rank = getInt(o, "rank", "options");
    options.alpha = getOptionalNumber(o, "alpha", "options").value_or(static_cast<double>(options.rank));
    options.dropout = getOptionalNumber(o, "dropout", "options").value_or(0.0);
    options.multiplier = getOptionalNumber(o, "multiplier", "options").value_or(1.0);
    options.init = parseInit(getOptionalString(o, "init", "options").value_or("gaussian"));
    options.type = lora::parseAdapterType(getOptionalString(o, "type", "options").value_or("lora"));
    options.factor = getOptionalInt(o, "factor", "options").value_or(-1);
    options.decomposeBoth = getBool(o, "decomposeBoth", false, "options");
    Napi::Value generator = o.Get("generator");
    if (!generator.IsUndefined() && !generator.IsNull()) {
      options.generator = unwrapGenerator(generator, "options.generator");
    }
    options.keyPrefix = getOptionalString(o, "keyPrefix", "options").value_or("");
    return runLocked<NamedTensors>(
        env, "sdtune:lora.create", model,
        [name, options](torch::nn::Module& m) { return lora::create(m, name, options); }, namedTensorsToJs);
  });
}

// parameters(model, name) -> Promise<[name, Tensor][]> (live: "<path>.lora_A.weight", "<path>.lora_B.weight")
Napi::Value parameters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    std::string name = readName(info[1]);
    return runLocked<NamedTensors>(
        env, "sdtune:lora.parameters", model, [name](torch::nn::Module& m) { return lora::parameters(m, name); },
        namedTensorsToJs);
  });
}

// extract(model, name) -> Promise<[{path, down, up, alpha}]> (copies)
Napi::Value extract(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    std::string name = readName(info[1]);
    return runLocked<std::vector<lora::AdapterWeights>>(
        env, "sdtune:lora.extract", model, [name](torch::nn::Module& m) { return lora::extract(m, name); },
        [](Napi::Env env, std::vector<lora::AdapterWeights>& adapters) -> Napi::Value {
          auto out = Napi::Array::New(env, adapters.size());
          for (size_t i = 0; i < adapters.size(); ++i) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("path", adapters[i].path);
            if (adapters[i].down.defined()) o.Set("down", TensorHandle::wrap(env, adapters[i].down));
            if (adapters[i].up.defined()) o.Set("up", TensorHandle::wrap(env, adapters[i].up));
            o.Set("alpha", adapters[i].alpha);
            o.Set("type", lora::adapterTypeName(adapters[i].type));
            Napi::Object factors = Napi::Object::New(env);
            for (auto& [n, t] : adapters[i].factors) factors.Set(n, TensorHandle::wrap(env, t));
            o.Set("factors", factors);
            out.Set(static_cast<uint32_t>(i), o);
          }
          return out;
        });
  });
}

// list(model) -> Promise<[{name, layers, minRank, maxRank, multiplier, enabled, fusedLayers, trainable}]>
Napi::Value list(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    return runLocked<std::vector<lora::AdapterInfo>>(
        env, "sdtune:lora.list", model, [](torch::nn::Module& m) { return lora::list(m); },
        [](Napi::Env env, std::vector<lora::AdapterInfo>& infos) -> Napi::Value {
          auto out = Napi::Array::New(env, infos.size());
          for (size_t i = 0; i < infos.size(); ++i) {
            const auto& a = infos[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("name", a.name);
            o.Set("layers", static_cast<double>(a.layers));
            o.Set("minRank", static_cast<double>(a.minRank));
            o.Set("maxRank", static_cast<double>(a.maxRank));
            o.Set("multiplier", a.multiplier);
            o.Set("enabled", a.enabled);
            o.Set("fusedLayers", static_cast<double>(a.fusedLayers));
            o.Set("trainable", a.trainable);
            o.Set("type", a.type);
            out.Set(static_cast<uint32_t>(i), o);
          }
          return out;
        });
  });
}

// setAdapters(model, names, weights) -> Promise<void>
Napi::Value setAdapters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    std::vector<std::string> names = toStringVector(info[1], "names");
    if (!info[2].IsArray()) throw Napi::TypeError::New(env, "weights must be an array of numbers");
    auto array = info[2].As<Napi::Array>();
    std::vector<double> weights;
    for (uint32_t i = 0; i < array.Length(); ++i) {
      Napi::Value v = array.Get(i);
      if (!v.IsNumber()) throw Napi::TypeError::New(env, "weights[" + std::to_string(i) + "] must be a number");
      weights.push_back(v.As<Napi::Number>().DoubleValue());
    }
    return runLocked<bool>(
        env, "sdtune:lora.setAdapters", model,
        [names, weights](torch::nn::Module& m) {
          lora::setActive(m, names, weights);
          return true;
        },
        undefinedResult);
  });
}

// setEnabled(model, enabled) -> Promise<void>
Napi::Value setEnabled(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    if (!info[1].IsBoolean()) throw Napi::TypeError::New(env, "enabled must be a boolean");
    bool enabled = info[1].As<Napi::Boolean>().Value();
    return runLocked<bool>(
        env, "sdtune:lora.setEnabled", model,
        [enabled](torch::nn::Module& m) {
          lora::setEnabled(m, enabled);
          return true;
        },
        undefinedResult);
  });
}

// remove(model, name) -> Promise<number of layers>
Napi::Value remove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    std::string name = readName(info[1]);
    return runLocked<int64_t>(
        env, "sdtune:lora.remove", model, [name](torch::nn::Module& m) { return lora::remove(m, name); }, numberResult);
  });
}

// fuse(model, {names?, scale?, permanent?}) -> Promise<number of layers changed>
Napi::Value fuse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    Napi::Object o = optionsOrEmpty(info[1], "options");
    lora::FuseOptions options;
    Napi::Value names = o.Get("names");
    if (!names.IsUndefined() && !names.IsNull()) options.names = toStringVector(names, "options.names");
    options.scale = getOptionalNumber(o, "scale", "options").value_or(1.0);
    options.permanent = getBool(o, "permanent", false, "options");
    return runLocked<int64_t>(
        env, "sdtune:lora.fuse", model, [options](torch::nn::Module& m) { return lora::fuse(m, options); },
        numberResult);
  });
}

// unfuse(model) -> Promise<number of layers restored>
Napi::Value unfuse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    ModelRef model = readModel(info[0], "model");
    return runLocked<int64_t>(
        env, "sdtune:lora.unfuse", model, [](torch::nn::Module& m) { return lora::unfuse(m); }, numberResult);
  });
}

void initLora(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("modules", Napi::Function::New(env, modules));
  ns.Set("attach", Napi::Function::New(env, attach));
  ns.Set("create", Napi::Function::New(env, create));
  ns.Set("parameters", Napi::Function::New(env, parameters));
  ns.Set("extract", Napi::Function::New(env, extract));
  ns.Set("list", Napi::Function::New(env, list));
  ns.Set("setAdapters", Napi::Function::New(env, setAdapters));
  ns.Set("setEnabled", Napi::Function::New(env, setEnabled));
  ns.Set("remove", Napi::Function::New(env, remove));
  ns.Set("fuse", Napi::Function::New(env, fuse));
  ns.Set("unfuse", Napi::Function::New(env, unfuse));
  addLoraDiagnostics(env, ns);
  exports.Set("lora", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(lora, initLora);

}  // namespace sdtune
