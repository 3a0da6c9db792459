// safetensors from JS: inspect (header only), open (mmap, lazy views), write (atomic).
#include <napi.h>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"
#include "io/safetensors.h"

namespace sdtune {

namespace {

namespace st = sdtune::safetensors;

Napi::Object headerToJs(Napi::Env env, const st::Header& header) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("headerSize", static_cast<double>(header.headerSize));
  out.Set("fileSize", static_cast<double>(header.fileSize));
  Napi::Object metadata = Napi::Object::New(env);
  for (const auto& [k, v] : header.metadata) metadata.Set(k, v);
  out.Set("metadata", metadata);
  auto tensors = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& t : header.tensors) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", t.name);
    o.Set("dtype", t.dtype);
    auto shape = Napi::Array::New(env);
    for (size_t d = 0; d < t.shape.size(); ++d) shape.Set(static_cast<uint32_t>(d), static_cast<double>(t.shape[d]));
    o.Set("shape", shape);
    auto offsets = Napi::Array::New(env);
    offsets.Set(0u, static_cast<double>(t.begin));
    offsets.Set(1u, static_cast<double>(t.end));
    o.Set("dataOffsets", offsets);
    tensors.Set(i++, o);
  }
  out.Set("tensors", tensors);
  return out;
}

class SafetensorsFileHandle : public Napi::ObjectWrap<SafetensorsFileHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "SafetensorsFile",
                                      {
                                          InstanceAccessor<&SafetensorsFileHandle::path>("path"),
                                          InstanceAccessor<&SafetensorsFileHandle::header>("header"),
                                          InstanceMethod<&SafetensorsFileHandle::get>("get"),
                                          InstanceMethod<&SafetensorsFileHandle::dispose>("dispose"),
                                      });
    addonData(env).constructors["SafetensorsFile"] = Napi::Persistent(ctor);
    exports.Set("SafetensorsFile", ctor);
  }

  static Napi::Object wrap(Napi::Env env, std::shared_ptr<st::MappedFile> file) {
    Napi::Object object = addonData(env).constructors["SafetensorsFile"].New({});
    Unwrap(object)->file_ = std::move(file);
    return object;
  }

  explicit SafetensorsFileHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SafetensorsFileHandle>(info) {}

 private:
  st::MappedFile& live(Napi::Env env) {
    if (!file_) throw Napi::Error::New(env, "SafetensorsFile is disposed");
    return *file_;
  }
  Napi::Value path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), live(info.Env()).path()); }
  Napi::Value header(const Napi::CallbackInfo& info) { return headerToJs(info.Env(), live(info.Env()).header()); }
  // get(name) -> Tensor: a view over the mapping; pages load when first touched.
  Napi::Value get(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "name must be a string");
    return guard(env,
                 [&] { return TensorHandle::wrap(env, live(env).tensor(info[0].As<Napi::String>().Utf8Value())); });
  }
  // Drops this handle's share of the mapping; tensors already made keep theirs.
  void dispose(const Napi::CallbackInfo&) { file_.reset(); }

  std::shared_ptr<st::MappedFile> file_;
};

Napi::Value inspect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  return PromiseWorker<st::Header>::run(
      env, "sdtune:safetensors.inspect", [path]() { return st::inspect(path); },
      [](Napi::Env env, st::Header& header) { return headerToJs(env, header); });
}

Napi::Value open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  return PromiseWorker<std::shared_ptr<st::MappedFile>>::run(
      env, "sdtune:safetensors.open", [path]() { return st::MappedFile::open(path); },
      [](Napi::Env env, std::shared_ptr<st::MappedFile>& file) { return SafetensorsFileHandle::wrap(env, file); });
}

// write(path, [[name, Tensor], ...], {key: value}) -> Promise<void>
Napi::Value write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
    std::string path = info[0].As<Napi::String>().Utf8Value();
    auto tensors = namedTensorsFromJs(info[1], "tensors");
    std::map<std::string, std::string> metadata;
    if (!info[2].IsUndefined() && !info[2].IsNull()) {
      auto object = requireObject(info[2], "metadata");
      auto keys = object.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); ++i) {
        std::string key = keys.Get(i).As<Napi::String>().Utf8Value();
        Napi::Value v = object.Get(key);
        if (!v.IsString()) throw Napi::TypeError::New(env, "metadata." + key + " must be a string");
        metadata[key] = v.As<Napi::String>().Utf8Value();
      }
    }
    return PromiseWorker<bool>::run(
        env, "sdtune:safetensors.write",
        [path, tensors, metadata]() {
          st::write(path, tensors, metadata);
          return true;
        },
        [](Napi::Env env, bool&) { return env.Undefined(); });
  });
}

void initSafetensors(Napi::Env env, Napi::Object exports) {
  SafetensorsFileHandle::init(env, exports);
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("inspect", Napi::Function::New(env, inspect));
  ns.Set("open", Napi::Function::New(env, open));
  ns.Set("write", Napi::Function::New(env, write));
  exports.Set("safetensors", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(safetensors, initSafetensors);

}  // namespace sdtune
