#include "bindings/common.h"

#include <cmath>
#include <stdexcept>

namespace sdtune {

std::vector<std::pair<const char*, BindingInit>>& registeredBindings() {
  static std::vector<std::pair<const char*, BindingInit>> bindings;
  return bindings;
}

BindingRegistrar::BindingRegistrar(const char* name, BindingInit init) {
  registeredBindings().emplace_back(name, init);
}

AddonData& addonData(Napi::Env env) {
  return *env.GetInstanceData<AddonData>();
}

std::string describeException(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::Error& e) {
    std::string text = e.what_without_backtrace();
    // libtorch appends "Exception raised from ..." lines for some errors.
    auto cut = text.find("\nException raised from");
    return cut == std::string::npos ? text : text.substr(0, cut);
  } catch (const std::bad_alloc&) {
    return "out of memory: a tensor allocation failed; reduce the batch size or resolution, or enable gradient "
           "checkpointing";
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown native error";
  }
}

Napi::Object requireObject(const Napi::Value& value, const std::string& what) {
  if (!value.IsObject()) throw std::invalid_argument(what + " must be an object");
  return value.As<Napi::Object>();
}

std::string getString(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) throw std::invalid_argument(what + "." + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

std::optional<std::string> getOptionalString(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return getString(o, key, what);
}

double getNumber(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw std::invalid_argument(what + "." + key + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw std::invalid_argument(what + "." + key + " must be finite");
  return d;
}

std::optional<double> getOptionalNumber(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return getNumber(o, key, what);
}

int64_t getInt(const Napi::Object& o, const char* key, const std::string& what) {
  double d = getNumber(o, key, what);
  if (std::floor(d) != d || std::fabs(d) > 9007199254740991.0) {
    throw std::invalid_argument(what + "." + key + " must be an integer");
  }
  return static_cast<int64_t>(d);
}

std::optional<int64_t> getOptionalInt(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return getInt(o, key, what);
}

bool getBool(const Napi::Object& o, const char* key, bool fallback, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsBoolean()) throw std::invalid_argument(what + "." + key + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::vector<int64_t> toIntVector(const Napi::Value& value, const std::string& what) {
  if (!value.IsArray()) throw std::invalid_argument(what + " must be an array of integers");
  auto array = value.As<Napi::Array>();
  std::vector<int64_t> out;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value v = array.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || std::floor(d) != d) {
      throw std::invalid_argument(what + "[" + std::to_string(i) + "] must be an integer");
    }
    out.push_back(static_cast<int64_t>(d));
  }
  return out;
}

std::vector<std::string> toStringVector(const Napi::Value& value, const std::string& what) {
  if (!value.IsArray()) throw std::invalid_argument(what + " must be an array of strings");
  auto array = value.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value v = array.Get(i);
    if (!v.IsString()) throw std::invalid_argument(what + "[" + std::to_string(i) + "] must be a string");
    out.push_back(v.As<Napi::String>().Utf8Value());
  }
  return out;
}

at::ScalarType parseDtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "float16") return at::kHalf;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float64") return at::kDouble;
  if (name == "int64") return at::kLong;
  if (name == "int32") return at::kInt;
  if (name == "int16") return at::kShort;
  if (name == "int8") return at::kChar;
  if (name == "uint8") return at::kByte;
  if (name == "bool") return at::kBool;
  throw std::invalid_argument(
      "unknown dtype \"" + name +
      "\" (expected float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8 or bool)");
}

std::string dtypeName(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kDouble: return "float64";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(type);
  }
}

at::Device parseDevice(const std::string& name) {
  try {
    at::Device device(name);
    if (device.is_cuda() && !torch::cuda::is_available()) {
      throw std::invalid_argument("device \"" + name + "\" requested but CUDA is not available in this build/machine");
    }
    return device;
  } catch (const c10::Error&) {
    throw std::invalid_argument("unknown device \"" + name + "\" (expected cpu, cuda or cuda:N)");
  }
}

std::string deviceName(const at::Device& device) {
  return device.str();
}

}  // namespace sdtune
