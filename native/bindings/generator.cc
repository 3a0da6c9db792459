// Generator: a CPU generator seeded like torch.Generator().manual_seed(seed), so the
// same seed draws the same numbers as PyTorch (and as diffusers' randn_tensor, which
// draws on the CPU and then moves the result). Its state round-trips for exact resume.
#include "bindings/generator.h"

#include <cmath>
#include <mutex>
#include <random>

#include "bindings/common.h"
#include "bindings/tensor_handle.h"

namespace sdtune {

namespace {

// A seed from a JS number (integer, negative values wrap like torch) or BigInt (uint64).
uint64_t toSeed(const Napi::Value& value) {
  Napi::Env env = value.Env();
  if (value.IsBigInt()) {
    bool lossless = false;
    uint64_t seed = value.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, "seed must fit in 64 bits (0 to 2^64 - 1)");
    return seed;
  }
  if (!value.IsNumber()) throw Napi::TypeError::New(env, "seed must be an integer number or a BigInt");
  double d = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > 9007199254740991.0) {
    throw Napi::RangeError::New(env, "seed must be a safe integer (or a BigInt)");
  }
  return static_cast<uint64_t>(static_cast<int64_t>(d));
}

// A fresh nondeterministic seed that still fits a JS number, so it can be logged and reused.
uint64_t randomSeed() {
  std::random_device device;
  return ((static_cast<uint64_t>(device()) << 32) ^ device()) & ((uint64_t{1} << 53) - 1);
}

class GeneratorHandle : public Napi::ObjectWrap<GeneratorHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "Generator",
                                      {
                                          InstanceAccessor<&GeneratorHandle::seed>("seed"),
                                          InstanceMethod<&GeneratorHandle::manualSeed>("manualSeed"),
                                          InstanceMethod<&GeneratorHandle::randn>("randn"),
                                          InstanceMethod<&GeneratorHandle::getState>("getState"),
                                          InstanceMethod<&GeneratorHandle::setState>("setState"),
                                      });
    addonData(env).constructors["Generator"] = Napi::Persistent(ctor);
    exports.Set("Generator", ctor);
  }

  // new Generator(seed?)
  explicit GeneratorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GeneratorHandle>(info) {
    uint64_t seed = info[0].IsUndefined() || info[0].IsNull() ? randomSeed() : toSeed(info[0]);
    generator_ = at::detail::createCPUGenerator(seed);
  }

  const at::Generator& generator() const { return generator_; }

 private:
  Napi::Value seed(const Napi::CallbackInfo& info) {
    uint64_t seed = 0;
    {
      std::lock_guard<std::mutex> lock(generator_.mutex());
      seed = generator_.current_seed();
    }
    if (seed <= 9007199254740991ull) return Napi::Number::New(info.Env(), static_cast<double>(seed));
    return Napi::BigInt::New(info.Env(), seed);
  }

  // manualSeed(seed): restarts the stream, like torch.Generator.manual_seed.
  void manualSeed(const Napi::CallbackInfo& info) {
    uint64_t seed = toSeed(info[0]);
    std::lock_guard<std::mutex> lock(generator_.mutex());
    generator_.set_current_seed(seed);
  }

  // randn(shape, {dtype?, device?}) -> Tensor: drawn on the CPU in `dtype`, then moved.
  Napi::Value randn(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto shape = toIntVector(info[0], "shape");
      auto options = info[1].IsUndefined() ? Napi::Object::New(env) : requireObject(info[1], "options");
      auto dtype = getOptionalString(options, "dtype", "options");
      auto device = getOptionalString(options, "device", "options");
      at::ScalarType type = dtype ? parseDtype(*dtype) : at::kFloat;
      if (!at::isFloatingType(type)) throw std::invalid_argument("randn: dtype must be a floating-point type");
      at::Tensor t = at::randn(shape, generator_, at::TensorOptions().dtype(type));  // locks the generator
      if (device) t = t.to(parseDevice(*device));
      return TensorHandle::wrap(env, t);
    });
  }

  // getState() -> uint8 Tensor (torch.Generator.get_state's layout).
  Napi::Value getState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      std::lock_guard<std::mutex> lock(generator_.mutex());
      return TensorHandle::wrap(env, generator_.get_state());
    });
  }

  // setState(tensor): restores a state from getState() (or torch.Generator.get_state()).
  void setState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    guard(env, [&] {
      at::Tensor state = TensorHandle::unwrap(info[0], "state");
      if (state.scalar_type() != at::kByte || state.dim() != 1) {
        throw std::invalid_argument("setState: state must be a 1-D uint8 tensor from getState()");
      }
      std::lock_guard<std::mutex> lock(generator_.mutex());
      generator_.set_state(state.to(at::kCPU).contiguous());
    });
  }

  at::Generator generator_;
};

}  // namespace

at::Generator unwrapGenerator(const Napi::Value& value, const std::string& what) {
  Napi::Env env = value.Env();
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(addonData(env).constructors["Generator"].Value())) {
    throw Napi::TypeError::New(env, what + " must be a Generator");
  }
  return GeneratorHandle::Unwrap(value.As<Napi::Object>())->generator();
}

std::vector<at::Generator> toGenerators(const Napi::Value& value, const std::string& what) {
  std::vector<at::Generator> out;
  if (value.IsUndefined() || value.IsNull()) return out;
  if (value.IsArray()) {
    auto array = value.As<Napi::Array>();
    for (uint32_t i = 0; i < array.Length(); ++i) {
      out.push_back(unwrapGenerator(array.Get(i), what + "[" + std::to_string(i) + "]"));
    }
    return out;
  }
  out.push_back(unwrapGenerator(value, what));
  return out;
}

SDTUNE_REGISTER_BINDING(generator, GeneratorHandle::init);

}  // namespace sdtune
