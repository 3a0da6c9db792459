// Shared pieces of the N-API layer: binding registration, exception translation,
// and readers that copy JS options into plain C++ values (on the JS thread,
// before any worker runs).
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace sdtune {

// ---- registration: each bindings/*.cc registers an init function; addon.cc runs them all.
using BindingInit = void (*)(Napi::Env env, Napi::Object exports);
struct BindingRegistrar {
  BindingRegistrar(const char* name, BindingInit init);
};
std::vector<std::pair<const char*, BindingInit>>& registeredBindings();
#define SDTUNE_REGISTER_BINDING(name, init) static ::sdtune::BindingRegistrar sdtune_binding_##name(#name, init)

// ---- per-environment state (constructors, the JS thread id, the executor's return path).
struct AddonData {
  std::thread::id jsThread;
  std::map<std::string, Napi::FunctionReference> constructors;
  bool shuttingDown = false;
  std::shared_ptr<void> jobs;  // this environment's side of the executor (bindings/executor.cc)
};
AddonData& addonData(Napi::Env env);

// ---- errors
// The message of any exception, without libtorch's C++ backtrace.
std::string describeException(std::exception_ptr error);
// Runs `body` on the JS thread and turns C++ exceptions into JS errors.
template <typename F>
auto guard(Napi::Env env, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw Napi::Error::New(env, describeException(std::current_exception()));
  }
}

// ---- option readers: each names the field in its error.
Napi::Object requireObject(const Napi::Value& value, const std::string& what);
std::string getString(const Napi::Object& o, const char* key, const std::string& what);
std::optional<std::string> getOptionalString(const Napi::Object& o, const char* key, const std::string& what);
double getNumber(const Napi::Object& o, const char* key, const std::string& what);
std::optional<double> getOptionalNumber(const Napi::Object& o, const char* key, const std::string& what);
int64_t getInt(const Napi::Object& o, const char* key, const std::string& what);
std::optional<int64_t> getOptionalInt(const Napi::Object& o, const char* key, const std::string& what);
bool getBool(const Napi::Object& o, const char* key, bool fallback, const std::string& what);
std::vector<int64_t> toIntVector(const Napi::Value& value, const std::string& what);
std::vector<std::string> toStringVector(const Napi::Value& value, const std::string& what);

// ---- dtype and device names shared with TypeScript ("float32", "cuda:0", ...).
at::ScalarType parseDtype(const std::string& name);
std::string dtypeName(at::ScalarType type);
at::Device parseDevice(const std::string& name);
std::string deviceName(const at::Device& device);

}  // namespace sdtune
