#include "bindings/optimizer_options.h"

#include <stdexcept>

#include "bindings/common.h"

namespace sdtune {

namespace {

void number(const Napi::Object& o, const char* key, const std::string& what, double& out) {
  out = getOptionalNumber(o, key, what).value_or(out);
}

void flag(const Napi::Object& o, const char* key, const std::string& what, bool& out) {
  out = getBool(o, key, out, what);
}

void readProdigy(const Napi::Object& o, const std::string& what, train::ProdigyOptions& out) {
  number(o, "beta1", what, out.beta1);
  number(o, "beta2", what, out.beta2);
  number(o, "beta3", what, out.beta3);
  number(o, "eps", what, out.eps);
  number(o, "weightDecay", what, out.weightDecay);
  flag(o, "decouple", what, out.decouple);
  flag(o, "useBiasCorrection", what, out.useBiasCorrection);
  flag(o, "safeguardWarmup", what, out.safeguardWarmup);
  number(o, "d0", what, out.d0);
  number(o, "dCoef", what, out.dCoef);
  number(o, "growthRate", what, out.growthRate);
  out.sliceP = getOptionalInt(o, "sliceP", what).value_or(out.sliceP);
}

void readAdafactor(const Napi::Object& o, const std::string& what, train::AdafactorOptions& out) {
  number(o, "eps1", what, out.eps1);
  number(o, "eps2", what, out.eps2);
  number(o, "clipThreshold", what, out.clipThreshold);
  number(o, "decayRate", what, out.decayRate);
  number(o, "beta1", what, out.beta1);
  number(o, "weightDecay", what, out.weightDecay);
  flag(o, "scaleParameter", what, out.scaleParameter);
  flag(o, "relativeStep", what, out.relativeStep);
  flag(o, "warmupInit", what, out.warmupInit);
}

void readLion(const Napi::Object& o, const std::string& what, train::LionOptions& out) {
  number(o, "beta1", what, out.beta1);
  number(o, "beta2", what, out.beta2);
  number(o, "weightDecay", what, out.weightDecay);
}

}  // namespace

void readAdamWOptions(const Napi::Object& o, const std::string& what, train::AdamWOptions& out) {
  number(o, "beta1", what, out.beta1);
  number(o, "beta2", what, out.beta2);
  number(o, "eps", what, out.eps);
  number(o, "weightDecay", what, out.weightDecay);
}

train::OptimizerOptions readOptimizerOptions(const Napi::Value& value, const std::string& what) {
  auto o = requireObject(value, what);
  train::OptimizerOptions options;
  const std::string type = getString(o, "type", what);
  if (type == "adamw") {
    options.kind = train::OptimizerKind::AdamW;
    readAdamWOptions(o, what, options.adamw);
  } else if (type == "prodigy") {
    options.kind = train::OptimizerKind::Prodigy;
    readProdigy(o, what, options.prodigy);
  } else if (type == "adafactor") {
    options.kind = train::OptimizerKind::Adafactor;
    readAdafactor(o, what, options.adafactor);
  } else if (type == "lion") {
    options.kind = train::OptimizerKind::Lion;
    readLion(o, what, options.lion);
  } else {
    throw std::invalid_argument(what + ".type must be adamw, prodigy, adafactor or lion, got \"" + type + "\"");
  }
  return options;
}

}  // namespace sdtune
