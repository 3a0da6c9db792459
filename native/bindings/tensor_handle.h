// The Tensor handle: a JS object that owns one at::Tensor.
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace sdtune {

struct ReleaseState;  // per environment: returns zero-copy memory to JS (tensor_handle.cc)

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports);
  // Wraps a tensor in a new JS Tensor object.
  static Napi::Object wrap(Napi::Env env, at::Tensor tensor);
  static bool isTensor(Napi::Env env, const Napi::Value& value);
  // The tensor behind a JS value; throws a TypeError naming `what` if it is not a live Tensor.
  static at::Tensor unwrap(const Napi::Value& value, const std::string& what);

  explicit TensorHandle(const Napi::CallbackInfo& info);
  ~TensorHandle() override;

  const at::Tensor& tensor() const { return tensor_; }

 private:
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value shape(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value numel(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);
  Napi::Value toTypedArray(const Napi::CallbackInfo& info);
  Napi::Value to(const Napi::CallbackInfo& info);
  Napi::Value clone(const Napi::CallbackInfo& info);
  Napi::Value reshape(const Napi::CallbackInfo& info);
  void dispose(const Napi::CallbackInfo& info);

  void release();

  at::Tensor tensor_;
  int64_t reportedBytes_ = 0;
  std::shared_ptr<ReleaseState> release_;
};

// Builds a tensor over a typed array's memory without copying; the typed array
// stays alive until the last tensor using its memory is freed, on any thread.
at::Tensor tensorFromTypedArray(Napi::Env env, const Napi::TypedArray& array, const std::vector<int64_t>& shape,
                                at::ScalarType dtype);

// A typed array over a CPU contiguous tensor's memory (copied only where V8 forbids external buffers).
Napi::Value typedArrayFromTensor(Napi::Env env, const at::Tensor& tensor);

// Named tensors cross as arrays of [name, Tensor] pairs (state dicts, parameter lists).
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;
// Reads [[name, Tensor], ...]; `what` names the argument in errors.
NamedTensors namedTensorsFromJs(const Napi::Value& value, const std::string& what);
// Wraps each tensor (no copy) into [[name, Tensor], ...].
Napi::Array namedTensorsToJs(Napi::Env env, const NamedTensors& tensors);
// Reads [Tensor, ...].
std::vector<at::Tensor> tensorsFromJs(const Napi::Value& value, const std::string& what);

}  // namespace sdtune
