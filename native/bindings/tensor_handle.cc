#include "bindings/tensor_handle.h"

#include <map>
#include <mutex>
#include <stdexcept>

#include "bindings/async.h"
#include "bindings/common.h"

namespace sdtune {

// ---- releasing JS owners of zero-copy memory from whatever thread frees the tensor.
// One per Node environment (the main thread and each worker_thread that loads the addon).
struct ReleaseState {
  napi_env env = nullptr;
  std::thread::id jsThread;
  Napi::ThreadSafeFunction tsfn;
  std::mutex mutex;
  bool closed = false;  // set when the environment is torn down: leak rather than touch a dead env
};

namespace {

std::mutex releaseStatesMutex;
std::map<napi_env, std::shared_ptr<ReleaseState>>& releaseStates() {
  static std::map<napi_env, std::shared_ptr<ReleaseState>> states;
  return states;
}

std::shared_ptr<ReleaseState> releaseStateFor(napi_env env) {
  std::lock_guard<std::mutex> lock(releaseStatesMutex);
  auto it = releaseStates().find(env);
  return it == releaseStates().end() ? nullptr : it->second;
}

void releaseOwner(const std::shared_ptr<ReleaseState>& state, napi_ref ref) {
  std::lock_guard<std::mutex> lock(state->mutex);
  if (state->closed) return;
  if (std::this_thread::get_id() == state->jsThread) {
    napi_delete_reference(state->env, ref);
    return;
  }
  auto* boxed = new napi_ref(ref);
  napi_status status = state->tsfn.NonBlockingCall(boxed, [](Napi::Env env, Napi::Function, napi_ref* r) {
    napi_delete_reference(env, *r);
    delete r;
  });
  if (status != napi_ok) delete boxed;  // the queue is closing: leaking one reference is harmless
}

size_t typedArrayElementSize(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array: return 1;
    case napi_int16_array:
    case napi_uint16_array: return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array: return 4;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array: return 8;
    default: return 0;
  }
}

// Which typed arrays may carry which dtype.
bool compatible(napi_typedarray_type type, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return type == napi_float32_array;
    case at::kDouble: return type == napi_float64_array;
    case at::kHalf:
    case at::kBFloat16: return type == napi_uint16_array;
    case at::kLong: return type == napi_bigint64_array;
    case at::kInt: return type == napi_int32_array;
    case at::kShort: return type == napi_int16_array;
    case at::kChar: return type == napi_int8_array;
    case at::kByte:
    case at::kBool: return type == napi_uint8_array;
    default: return false;
  }
}

napi_typedarray_type typedArrayTypeFor(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return napi_float32_array;
    case at::kDouble: return napi_float64_array;
    case at::kHalf:
    case at::kBFloat16: return napi_uint16_array;
    case at::kLong: return napi_bigint64_array;
    case at::kInt: return napi_int32_array;
    case at::kShort: return napi_int16_array;
    case at::kChar: return napi_int8_array;
    case at::kByte:
    case at::kBool: return napi_uint8_array;
    default: throw std::invalid_argument(std::string("no typed array holds dtype ") + c10::toString(dtype));
  }
}

int64_t storageBytes(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return 0;
  return static_cast<int64_t>(t.storage().nbytes());
}

}  // namespace

at::Tensor tensorFromTypedArray(Napi::Env env, const Napi::TypedArray& array, const std::vector<int64_t>& shape,
                                at::ScalarType dtype) {
  napi_typedarray_type type = array.TypedArrayType();
  if (!compatible(type, dtype)) {
    throw std::invalid_argument("a typed array of this kind cannot hold dtype " + dtypeName(dtype) +
                                " (float16/bfloat16 take a Uint16Array of raw bits, int64 a BigInt64Array, bool a "
                                "Uint8Array)");
  }
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument("shape entries must be >= 0");
    numel *= d;
  }
  size_t elementSize = typedArrayElementSize(type);
  if (static_cast<size_t>(numel) != array.ElementLength()) {
    throw std::invalid_argument("shape holds " + std::to_string(numel) + " elements but the typed array has " +
                                std::to_string(array.ElementLength()));
  }
  auto options = at::TensorOptions().dtype(dtype);
  if (numel == 0) return at::empty(shape, options);
  Napi::ArrayBuffer buffer = array.ArrayBuffer();
  char* data = static_cast<char*>(buffer.Data()) + array.ByteOffset();
  if (reinterpret_cast<uintptr_t>(data) % elementSize != 0) {
    auto out = at::empty(shape, options);
    std::memcpy(out.data_ptr(), data, numel * elementSize);
    return out;
  }
  napi_ref ref = nullptr;
  if (napi_create_reference(env, buffer, 1, &ref) != napi_ok) throw std::runtime_error("cannot reference typed array");
  auto state = releaseStateFor(env);
  if (!state) throw std::runtime_error("sdtune: the addon is not initialised in this environment");
  return at::from_blob(
      data, shape, [state, ref](void*) { releaseOwner(state, ref); }, options);
}

Napi::Value typedArrayFromTensor(Napi::Env env, const at::Tensor& input) {
  at::Tensor t = input.detach().to(at::kCPU).contiguous();
  napi_typedarray_type type = typedArrayTypeFor(t.scalar_type());
  size_t bytes = t.nbytes();
  napi_value arrayBuffer = nullptr;
  napi_status status = napi_generic_failure;
  if (bytes > 0) {
    auto* keep = new at::Tensor(t);
    status = napi_create_external_arraybuffer(
        env, t.data_ptr(), bytes, [](napi_env, void*, void* hint) { delete static_cast<at::Tensor*>(hint); }, keep,
        &arrayBuffer);
    if (status != napi_ok) delete keep;
  }
  if (status != napi_ok) {  // empty, or a runtime without external buffers: copy
    void* out = nullptr;
    if (napi_create_arraybuffer(env, bytes, &out, &arrayBuffer) != napi_ok) {
      throw std::runtime_error("cannot allocate an ArrayBuffer of " + std::to_string(bytes) + " bytes");
    }
    if (bytes) std::memcpy(out, t.data_ptr(), bytes);
  }
  napi_value typed = nullptr;
  size_t length = static_cast<size_t>(t.numel());
  if (napi_create_typedarray(env, type, length, arrayBuffer, 0, &typed) != napi_ok) {
    throw std::runtime_error("cannot create a typed array");
  }
  return Napi::Value(env, typed);
}

NamedTensors namedTensorsFromJs(const Napi::Value& value, const std::string& what) {
  Napi::Env env = value.Env();
  if (!value.IsArray()) throw Napi::TypeError::New(env, what + " must be an array of [name, Tensor] pairs");
  auto array = value.As<Napi::Array>();
  NamedTensors out;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value entry = array.Get(i);
    if (!entry.IsArray() || entry.As<Napi::Array>().Length() != 2 || !entry.As<Napi::Array>().Get(0u).IsString()) {
      throw Napi::TypeError::New(env, what + "[" + std::to_string(i) + "] must be [name, Tensor]");
    }
    std::string name = entry.As<Napi::Array>().Get(0u).As<Napi::String>().Utf8Value();
    out.emplace_back(name, TensorHandle::unwrap(entry.As<Napi::Array>().Get(1u), what + " \"" + name + "\""));
  }
  return out;
}

Napi::Array namedTensorsToJs(Napi::Env env, const NamedTensors& tensors) {
  auto out = Napi::Array::New(env, tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto pair = Napi::Array::New(env, 2);
    pair.Set(0u, tensors[i].first);
    pair.Set(1u, TensorHandle::wrap(env, tensors[i].second));
    out.Set(static_cast<uint32_t>(i), pair);
  }
  return out;
}

std::vector<at::Tensor> tensorsFromJs(const Napi::Value& value, const std::string& what) {
  if (!value.IsArray()) throw Napi::TypeError::New(value.Env(), what + " must be an array of Tensors");
  auto array = value.As<Napi::Array>();
  std::vector<at::Tensor> out;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    out.push_back(TensorHandle::unwrap(array.Get(i), what + "[" + std::to_string(i) + "]"));
  }
  return out;
}

// ---- the handle

void TensorHandle::init(Napi::Env env, Napi::Object exports) {
  auto state = std::make_shared<ReleaseState>();
  state->env = env;
  state->jsThread = std::this_thread::get_id();
  state->tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                              "sdtune:release", 0, 1);
  state->tsfn.Unref(env);
  napi_env rawEnv = env;
  env.AddCleanupHook([state, rawEnv]() {
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      state->closed = true;
    }
    std::lock_guard<std::mutex> lock(releaseStatesMutex);
    releaseStates().erase(rawEnv);
  });
  {
    std::lock_guard<std::mutex> lock(releaseStatesMutex);
    releaseStates()[env] = state;
  }

  Napi::Function ctor = DefineClass(env, "Tensor",
                                    {
                                        InstanceAccessor<&TensorHandle::dtype>("dtype"),
                                        InstanceAccessor<&TensorHandle::shape>("shape"),
                                        InstanceAccessor<&TensorHandle::device>("device"),
                                        InstanceAccessor<&TensorHandle::numel>("numel"),
                                        InstanceAccessor<&TensorHandle::disposed>("disposed"),
                                        InstanceMethod<&TensorHandle::toTypedArray>("toTypedArray"),
                                        InstanceMethod<&TensorHandle::to>("to"),
                                        InstanceMethod<&TensorHandle::clone>("clone"),
                                        InstanceMethod<&TensorHandle::reshape>("reshape"),
                                        InstanceMethod<&TensorHandle::dispose>("dispose"),
                                    });
  addonData(env).constructors["Tensor"] = Napi::Persistent(ctor);
  exports.Set("Tensor", ctor);

  // fromTypedArray(data, shape, dtype) -> Tensor (zero copy)
  exports.Set("tensorFromTypedArray", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
                Napi::Env env = info.Env();
                return guard(env, [&]() -> Napi::Value {
                  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "data must be a typed array");
                  auto shape = toIntVector(info[1], "shape");
                  if (!info[2].IsString()) throw Napi::TypeError::New(env, "dtype must be a string");
                  auto dtype = parseDtype(info[2].As<Napi::String>().Utf8Value());
                  return wrap(env, tensorFromTypedArray(env, info[0].As<Napi::TypedArray>(), shape, dtype));
                });
              }));
}

Napi::Object TensorHandle::wrap(Napi::Env env, at::Tensor tensor) {
  Napi::Object object = addonData(env).constructors["Tensor"].New({});
  TensorHandle* handle = Unwrap(object);
  handle->tensor_ = std::move(tensor);
  handle->reportedBytes_ = storageBytes(handle->tensor_);
  // Tell V8 how much native memory this small object holds, so GC pressure is right.
  if (handle->reportedBytes_) Napi::MemoryManagement::AdjustExternalMemory(env, handle->reportedBytes_);
  return object;
}

bool TensorHandle::isTensor(Napi::Env env, const Napi::Value& value) {
  if (!value.IsObject()) return false;
  return value.As<Napi::Object>().InstanceOf(addonData(env).constructors["Tensor"].Value());
}

at::Tensor TensorHandle::unwrap(const Napi::Value& value, const std::string& what) {
  Napi::Env env = value.Env();
  if (!isTensor(env, value)) throw Napi::TypeError::New(env, what + " must be a Tensor");
  TensorHandle* handle = Unwrap(value.As<Napi::Object>());
  if (!handle->tensor_.defined()) throw Napi::Error::New(env, what + " is a disposed Tensor");
  return handle->tensor_;
}

TensorHandle::TensorHandle(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<TensorHandle>(info), release_(releaseStateFor(info.Env())) {}

TensorHandle::~TensorHandle() {
  // Runs in the GC finalizer when dispose() was never called.
  if (reportedBytes_ && release_ && !release_->closed) napi_adjust_external_memory(Env(), -reportedBytes_, nullptr);
  tensor_ = at::Tensor();
}

void TensorHandle::release() {
  if (reportedBytes_) {
    Napi::MemoryManagement::AdjustExternalMemory(Env(), -reportedBytes_);
    reportedBytes_ = 0;
  }
  tensor_ = at::Tensor();
}

Napi::Value TensorHandle::dtype(const Napi::CallbackInfo& info) {
  if (!tensor_.defined()) return info.Env().Undefined();
  return Napi::String::New(info.Env(), dtypeName(tensor_.scalar_type()));
}

Napi::Value TensorHandle::shape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto out = Napi::Array::New(env);
  if (!tensor_.defined()) return out;
  for (int64_t d = 0; d < tensor_.dim(); ++d) out.Set(static_cast<uint32_t>(d), static_cast<double>(tensor_.size(d)));
  return out;
}

Napi::Value TensorHandle::device(const Napi::CallbackInfo& info) {
  if (!tensor_.defined()) return info.Env().Undefined();
  return Napi::String::New(info.Env(), deviceName(tensor_.device()));
}

Napi::Value TensorHandle::numel(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), tensor_.defined() ? static_cast<double>(tensor_.numel()) : 0);
}

Napi::Value TensorHandle::disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !tensor_.defined());
}

Napi::Value TensorHandle::toTypedArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!tensor_.defined()) throw Napi::Error::New(env, "toTypedArray() on a disposed Tensor");
  return guard(env, [&] { return typedArrayFromTensor(env, tensor_); });
}

// to({dtype?, device?}) -> Promise<Tensor>: a copy (device moves can be slow).
Napi::Value TensorHandle::to(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!tensor_.defined()) throw Napi::Error::New(env, "to() on a disposed Tensor");
  return guard(env, [&]() -> Napi::Value {
    auto options = info[0].IsUndefined() ? Napi::Object::New(env) : requireObject(info[0], "options");
    auto dtype = getOptionalString(options, "dtype", "options");
    auto device = getOptionalString(options, "device", "options");
    at::ScalarType type = dtype ? parseDtype(*dtype) : tensor_.scalar_type();
    at::Device target = device ? parseDevice(*device) : tensor_.device();
    at::Tensor source = tensor_;
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:tensor.to", [=]() { return source.to(target, type, /*non_blocking=*/false, /*copy=*/true); },
        [](Napi::Env env, at::Tensor& out) { return wrap(env, out); });
  });
}

Napi::Value TensorHandle::clone(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!tensor_.defined()) throw Napi::Error::New(env, "clone() on a disposed Tensor");
  return guard(env, [&] { return wrap(env, tensor_.clone()); });
}

Napi::Value TensorHandle::reshape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!tensor_.defined()) throw Napi::Error::New(env, "reshape() on a disposed Tensor");
  return guard(env, [&] { return wrap(env, tensor_.reshape(toIntVector(info[0], "shape"))); });
}

// Idempotent: a second call does nothing.
void TensorHandle::dispose(const Napi::CallbackInfo&) {
  release();
}

}  // namespace sdtune
