// The part every model handle (UNet, VAE, TextEncoder, ClipModel) shares, written once:
// a JS object holding a share of one loaded model (the Holder), how other bindings take
// that model from JS (unwrap), and the members every model has (stateDict, dtype, device,
// disposed, dispose). Each model's binding adds its own methods and `load`.
//
//   class UNetHandle : public ModelHandle<UNetHandle, UNetHolder> {
//    public:
//     static constexpr const char* kName = "UNet";
//     static constexpr bool kDisposedIsTypeError = true;  // unwrap()'s error for a disposed handle
//     ...
//   };
//
// A Holder has `std::mutex mutex`, `at::ScalarType dtype`, `at::Device device` and
// `torch::nn::Module& base()` (the module whose weights stateDict() lists).
#pragma once

#include <napi.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings/common.h"
#include "bindings/model_common.h"

namespace sdtune {

template <typename Derived, typename Holder>
class ModelHandle : public Napi::ObjectWrap<Derived> {
 public:
  using Wrap = Napi::ObjectWrap<Derived>;

  // A new JS handle sharing `holder`.
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<Holder> holder) {
    Napi::Object object = addonData(env).constructors[Derived::kName].New({});
    base(Wrap::Unwrap(object))->holder_ = std::move(holder);
    return object;
  }

  // Whether `value` is a handle of this kind (live or disposed).
  static bool isHandle(Napi::Env env, const Napi::Value& value) {
    return value.IsObject() && value.As<Napi::Object>().InstanceOf(addonData(env).constructors[Derived::kName].Value());
  }

  // The model behind a JS value; throws naming `what` unless it is a live handle of this kind.
  static std::shared_ptr<Holder> unwrap(const Napi::Value& value, const std::string& what) {
    Napi::Env env = value.Env();
    if (!isHandle(env, value)) throw Napi::TypeError::New(env, what + " must be a " + Derived::kName);
    auto holder = base(Wrap::Unwrap(value.As<Napi::Object>()))->holder_;
    if (!holder) {
      std::string message = what + " is a disposed " + Derived::kName;
      if (Derived::kDisposedIsTypeError) throw Napi::TypeError::New(env, message);
      throw Napi::Error::New(env, message);
    }
    return holder;
  }

 protected:
  explicit ModelHandle(const Napi::CallbackInfo& info) : Wrap(info) {}

  // Defines the JS class: the model's own `members`, then the shared ones.
  static void define(Napi::Env env, Napi::Object exports, std::vector<typename Wrap::PropertyDescriptor> members) {
    members.push_back(Wrap::InstanceMethod("stateDict", &ModelHandle::stateDict));
    members.push_back(Wrap::InstanceAccessor("dtype", &ModelHandle::dtype, nullptr));
    members.push_back(Wrap::InstanceAccessor("device", &ModelHandle::device, nullptr));
    members.push_back(Wrap::InstanceAccessor("disposed", &ModelHandle::disposed, nullptr));
    members.push_back(Wrap::InstanceMethod("dispose", &ModelHandle::dispose));
    Napi::Function ctor = Wrap::DefineClass(env, Derived::kName, members);
    addonData(env).constructors[Derived::kName] = Napi::Persistent(ctor);
    exports.Set(Derived::kName, ctor);
  }

  // This handle's model; throws "<Name> is disposed" after dispose().
  std::shared_ptr<Holder> live(Napi::Env env) const {
    if (!holder_) throw Napi::Error::New(env, std::string(Derived::kName) + " is disposed");
    return holder_;
  }

  // stateDict() -> Promise<[name, Tensor][]>: every weight by checkpoint key (views, no copy).
  Napi::Value stateDict(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto holder = live(env);
      return stateDictToJs(env, holder, &holder->base(), &holder->mutex);
    });
  }

  Napi::Value dtype(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), dtypeName(live(info.Env())->dtype));
  }

  Napi::Value device(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), deviceName(live(info.Env())->device));
  }

  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !holder_); }

  // Drops this handle's share; the model is freed when no handle or running call holds it.
  void dispose(const Napi::CallbackInfo&) { holder_.reset(); }

  std::shared_ptr<Holder> holder_;

 private:
  static ModelHandle* base(Derived* derived) { return derived; }
};

}  // namespace sdtune
