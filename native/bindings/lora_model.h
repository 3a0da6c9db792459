// What the LoRA bindings share (lora_binding.cc, lora_diagnostics.cc): a model from any
// handle kind, and running work on it under its mutex on the executor.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <string>

#include "bindings/async.h"

namespace sdtune {

// A model from any handle kind: its root module and the mutex that guards it.
struct ModelRef {
  std::shared_ptr<void> keep;  // the holder: alive until the worker ends
  torch::nn::Module* module = nullptr;
  std::mutex* mutex = nullptr;
};

// A UNet, TextEncoder, ClipModel or VAE handle; a TypeError naming `what` otherwise.
ModelRef readModel(const Napi::Value& value, const std::string& what);

// An adapter name (a string).
std::string readName(const Napi::Value& value);

// Runs `work(module)` under the model's mutex on the executor.
template <typename Result, typename Work, typename Convert>
Napi::Value runLocked(Napi::Env env, const char* name, const ModelRef& model, Work work, Convert convert) {
  return PromiseWorker<Result>::run(
      env, name,
      [model, work]() -> Result {
        std::lock_guard<std::mutex> lock(*model.mutex);
        return work(*model.module);
      },
      convert);
}

// Adds unetLossAndGradients and layerForward to the `lora` namespace object.
void addLoraDiagnostics(Napi::Env env, Napi::Object ns);

}  // namespace sdtune
