#include "bindings/js_json.h"

#include <stdexcept>

namespace sdtune {

json::Value toJson(const Napi::Value& value, const std::string& where, int depth) {
  if (depth > 16) throw std::invalid_argument(where + " is nested too deeply");
  json::Value out;
  if (value.IsUndefined() || value.IsNull()) return out;
  if (value.IsBoolean()) {
    out.kind = json::Value::Kind::Bool;
    out.boolean = value.As<Napi::Boolean>().Value();
  } else if (value.IsNumber()) {
    out.kind = json::Value::Kind::Number;
    out.number = value.As<Napi::Number>().DoubleValue();  // may be -Infinity (lambda_min_clipped)
  } else if (value.IsString()) {
    out.kind = json::Value::Kind::String;
    out.string = value.As<Napi::String>().Utf8Value();
  } else if (value.IsArray()) {
    out.kind = json::Value::Kind::Array;
    auto array = value.As<Napi::Array>();
    for (uint32_t i = 0; i < array.Length(); ++i) {
      out.array.push_back(toJson(array.Get(i), where + "[" + std::to_string(i) + "]", depth + 1));
    }
  } else if (value.IsObject()) {
    out.kind = json::Value::Kind::Object;
    auto object = value.As<Napi::Object>();
    auto keys = object.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      std::string key = keys.Get(i).As<Napi::String>().Utf8Value();
      Napi::Value member = object.Get(key);
      if (member.IsUndefined()) continue;  // { key: undefined } means "not given"
      out.object.emplace_back(key, toJson(member, where + "." + key, depth + 1));
    }
  } else {
    throw std::invalid_argument(where + " holds a value JSON cannot carry");
  }
  return out;
}

Napi::Value toJs(Napi::Env env, const json::Value& value) {
  switch (value.kind) {
    case json::Value::Kind::Null: return env.Null();
    case json::Value::Kind::Bool: return Napi::Boolean::New(env, value.boolean);
    case json::Value::Kind::Number: return Napi::Number::New(env, value.number);
    case json::Value::Kind::String: return Napi::String::New(env, value.string);
    case json::Value::Kind::Array: {
      auto array = Napi::Array::New(env, value.array.size());
      for (size_t i = 0; i < value.array.size(); ++i) array.Set(static_cast<uint32_t>(i), toJs(env, value.array[i]));
      return array;
    }
    case json::Value::Kind::Object: {
      auto object = Napi::Object::New(env);
      for (const auto& [key, member] : value.object) object.Set(key, toJs(env, member));
      return object;
    }
  }
  return env.Undefined();
}

}  // namespace sdtune
