// The TextEncoder handle: a JS object that owns one loaded CLIPTextModel.
// Other bindings (pipeline, trainer, LoRA) take the model through unwrap():
//
//   auto holder = TextEncoderHandle::unwrap(info[0], "textEncoder");   // JS thread
//   ... in a worker:
//   std::lock_guard<std::mutex> lock(holder->mutex);
//   holder->sync();
//   holder->model->forward(ids, options);
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "bindings/model_handle.h"
#include "models/clip_text.h"

namespace sdtune {

// Shared by the handle and every worker using the model; the model stays alive
// while any of them holds it, so dispose() never pulls it from under running work.
struct TextEncoderHolder {
  std::mutex mutex;  // held by whoever runs or changes the model
  models::CLIPTextModel model{nullptr};
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // Set from JS without waiting for running work; applied by sync().
  std::atomic<bool> gradientCheckpointing{false};

  // Call with `mutex` held, before running the model: applies settings made from JS.
  void sync() { model->setGradientCheckpointing(gradientCheckpointing.load()); }
  torch::nn::Module& base() { return *model; }
};

// wrap / isHandle / unwrap (throws naming `what` unless a live TextEncoder) come from ModelHandle.
class TextEncoderHandle : public ModelHandle<TextEncoderHandle, TextEncoderHolder> {
 public:
  static constexpr const char* kName = "TextEncoder";
  static constexpr bool kDisposedIsTypeError = false;
  static void init(Napi::Env env, Napi::Object exports);

  explicit TextEncoderHandle(const Napi::CallbackInfo& info) : ModelHandle(info) {}

 private:
  static Napi::Value load(const Napi::CallbackInfo& info);
  Napi::Value forward(const Napi::CallbackInfo& info);
  Napi::Value lossAndGradients(const Napi::CallbackInfo& info);
  void setGradientCheckpointing(const Napi::CallbackInfo& info);
  Napi::Value gradientCheckpointing(const Napi::CallbackInfo& info);
};

}  // namespace sdtune
