// The VAE handle: a JS object sharing one loaded AutoencoderKL. Later bindings
// (pipeline, trainer) take a VAE from JS with VAEHandle::unwrap.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>

#include "models/vae.h"

namespace sdtune {

// One loaded model, shared by every handle and binding that uses it; hold `mutex` while using it.
struct VAEHolder {
  models::AutoencoderKL module{nullptr};
  models::VAEOptions config;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  std::mutex mutex;
};

class VAEHandle : public Napi::ObjectWrap<VAEHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<VAEHolder> holder);
  static std::shared_ptr<VAEHolder> unwrap(const Napi::Value& value, const std::string& what);

  explicit VAEHandle(const Napi::CallbackInfo& info);

 private:
  std::shared_ptr<VAEHolder> live(Napi::Env env) const;
  Napi::Value encode(const Napi::CallbackInfo& info);
  Napi::Value sample(const Napi::CallbackInfo& info);
  Napi::Value decode(const Napi::CallbackInfo& info);
  Napi::Value scalingFactor(const Napi::CallbackInfo& info);
  Napi::Value scaleFactor(const Napi::CallbackInfo& info);
  Napi::Value stateDict(const Napi::CallbackInfo& info);
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);
  void dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<VAEHolder> holder_;
};

}  // namespace sdtune
