// The tensor ops that LoRA file conversion needs (src/lora/): folding the factor
// alpha/rank into `up` for formats that carry no alpha, and undoing that fold
// exactly. Everything else about LoRA files is TypeScript.
#include <napi.h>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"

namespace sdtune {

namespace {

// x * factor in x's dtype, computed as PyTorch computes `x * python_float`: the
// factor is rounded to the tensor's compute type first, then one rounded multiply.
at::Tensor foldScale(const at::Tensor& x, double factor) {
  return x.mul(factor);
}

// The same-size integer type, to step a float to its neighbours by bit pattern.
at::ScalarType bitsType(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return at::kInt;
    case at::kDouble: return at::kLong;
    case at::kHalf:
    case at::kBFloat16: return at::kShort;
    default: throw std::invalid_argument(std::string("unfold: expected a floating tensor, got ") + c10::toString(type));
  }
}

struct Unfolded {
  at::Tensor tensor;
  int64_t inexact = 0;
};

// For each element y, an x with foldScale(x, factor) == y bit for bit. The
// correctly rounded quotient y / factor is tried first, then its neighbours one
// and two steps away (a preimage of a rounded product always lies within that
// range). Elements with no preimage (y was not produced by foldScale) keep the
// quotient and are counted in `inexact`.
Unfolded unfoldScale(const at::Tensor& input, double factor) {
  at::Tensor y = input.contiguous();
  at::ScalarType type = y.scalar_type();
  at::ScalarType bits = bitsType(type);
  at::Tensor x = y.to(at::kDouble).div(factor).to(type);  // nearest value to y / factor
  at::Tensor ok = foldScale(x, factor).eq(y).logical_or(y.isnan());
  for (int64_t step : {1, -1, 2, -2}) {
    if (ok.all().item<bool>()) break;
    at::Tensor candidate = x.view(bits).add(step).view(type);  // the float `step` patterns away
    at::Tensor hit = foldScale(candidate, factor).eq(y).logical_and(ok.logical_not());
    x = at::where(hit, candidate, x);
    ok = ok.logical_or(hit);
  }
  return {x, ok.logical_not().sum().item<int64_t>()};
}

// A multiply by a factor that is not a power of two can map two neighbouring
// floats to one value, so unfoldScale alone cannot always return the original.
// The residual is the original's bit pattern minus unfoldScale's answer (int8,
// almost all zeros; never beyond +-2): with it the inverse is exact.
struct FoldedExact {
  at::Tensor folded;
  at::Tensor residual;
  int64_t nonzero = 0;
};

FoldedExact foldExact(const at::Tensor& input, double factor) {
  at::Tensor x = input.contiguous();
  at::ScalarType bits = bitsType(x.scalar_type());
  at::Tensor folded = foldScale(x, factor);
  at::Tensor back = unfoldScale(folded, factor).tensor;
  at::Tensor diff = x.view(bits).to(at::kLong) - back.view(bits).to(at::kLong);
  if (diff.numel() > 0 && diff.abs().max().item<int64_t>() > 127) {
    throw std::runtime_error("foldExact: residual out of int8 range");
  }
  at::Tensor residual = diff.to(at::kChar);
  return {folded, residual, residual.ne(0).sum().item<int64_t>()};
}

double requireFactor(const Napi::Value& value) {
  if (!value.IsNumber()) throw std::invalid_argument("factor must be a number");
  double factor = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(factor) || factor == 0) throw std::invalid_argument("factor must be finite and non-zero");
  return factor;
}

// fold(tensor, factor) -> Promise<Tensor>
Napi::Value fold(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    at::Tensor x = TensorHandle::unwrap(info[0], "tensor");
    double factor = requireFactor(info[1]);
    if (!at::isFloatingType(x.scalar_type())) throw std::invalid_argument("fold: expected a floating tensor");
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:loraFiles.fold", [x, factor]() { return foldScale(x, factor); },
        [](Napi::Env env, at::Tensor& t) { return TensorHandle::wrap(env, t); });
  });
}

// foldExact(tensor, factor) -> Promise<{folded, residual, nonzero}>
Napi::Value foldExactJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    at::Tensor x = TensorHandle::unwrap(info[0], "tensor");
    double factor = requireFactor(info[1]);
    bitsType(x.scalar_type());  // validates the dtype on the JS thread
    return PromiseWorker<FoldedExact>::run(
        env, "sdtune:loraFiles.foldExact", [x, factor]() { return foldExact(x, factor); },
        [](Napi::Env env, FoldedExact& result) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("folded", TensorHandle::wrap(env, result.folded));
          out.Set("residual", TensorHandle::wrap(env, result.residual));
          out.Set("nonzero", Napi::Number::New(env, static_cast<double>(result.nonzero)));
          return out;
        });
  });
}

// unfold(tensor, factor, residual?) -> Promise<{tensor, inexact}>
Napi::Value unfold(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    at::Tensor y = TensorHandle::unwrap(info[0], "tensor");
    double factor = requireFactor(info[1]);
    at::ScalarType bits = bitsType(y.scalar_type());
    at::Tensor residual;
    if (!info[2].IsUndefined() && !info[2].IsNull()) {
      residual = TensorHandle::unwrap(info[2], "residual");
      if (residual.scalar_type() != at::kChar || residual.numel() != y.numel()) {
        throw std::invalid_argument("unfold: residual must be an int8 tensor with as many elements as the tensor");
      }
    }
    return PromiseWorker<Unfolded>::run(
        env, "sdtune:loraFiles.unfold",
        [y, factor, residual, bits]() {
          Unfolded result = unfoldScale(y, factor);
          if (residual.defined()) {
            at::Tensor corrected = result.tensor.view(bits).add(residual.reshape(y.sizes()).to(bits));
            result.tensor = corrected.view(y.scalar_type());
          }
          return result;
        },
        [](Napi::Env env, Unfolded& result) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("tensor", TensorHandle::wrap(env, result.tensor));
          out.Set("inexact", Napi::Number::New(env, static_cast<double>(result.inexact)));
          return out;
        });
  });
}

void initLoraFiles(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("fold", Napi::Function::New(env, fold));
  ns.Set("foldExact", Napi::Function::New(env, foldExactJs));
  ns.Set("unfold", Napi::Function::New(env, unfold));
  exports.Set("loraFiles", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(loraFiles, initLoraFiles);

}  // namespace sdtune
