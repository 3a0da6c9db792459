#include "bindings/scheduler_params.h"

#include <cmath>
#include <initializer_list>
#include <stdexcept>

#include "bindings/common.h"

namespace sdtune {

namespace {

// The index of o[key]'s string in `choices`.
template <typename Enum>
Enum getChoice(const Napi::Object& o, const char* key, const std::string& what,
               std::initializer_list<const char*> choices) {
  const std::string value = getString(o, key, what);
  int i = 0;
  for (const char* choice : choices) {
    if (value == choice) return static_cast<Enum>(i);
    ++i;
  }
  throw std::invalid_argument(what + "." + key + " has an unknown value \"" + value + "\"");
}

// lambda_min_clipped: -Infinity (no clipping) is its default.
double getNumberOrMinusInfinity(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (v.IsNumber() && v.As<Napi::Number>().DoubleValue() == -INFINITY) return -INFINITY;
  return getNumber(o, key, what);
}

std::optional<std::vector<double>> getOptionalNumbers(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  if (!v.IsArray()) throw std::invalid_argument(what + "." + key + " must be null or an array of numbers");
  auto array = v.As<Napi::Array>();
  std::vector<double> out;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    double d = item.IsNumber() ? item.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d)) throw std::invalid_argument(what + "." + key + " entries must be finite numbers");
    out.push_back(d);
  }
  return out;
}

bool requireBool(const Napi::Object& o, const char* key, const std::string& what) {
  if (!o.Get(key).IsBoolean()) throw std::invalid_argument(what + "." + key + " must be a boolean");
  return o.Get(key).As<Napi::Boolean>().Value();
}

}  // namespace

sched::SchedulerConfig readSchedulerParams(const Napi::Value& value, const std::string& what) {
  using namespace sched;
  Napi::Object o = requireObject(value, what);
  SchedulerConfig c;
  c.num_train_timesteps = getInt(o, "num_train_timesteps", what);
  c.beta_start = getNumber(o, "beta_start", what);
  c.beta_end = getNumber(o, "beta_end", what);
  c.beta_schedule = getChoice<BetaSchedule>(o, "beta_schedule", what, {"linear", "scaled_linear", "squaredcos_cap_v2"});
  c.trained_betas = getOptionalNumbers(o, "trained_betas", what);
  c.prediction_type = getChoice<PredictionType>(o, "prediction_type", what, {"epsilon", "v_prediction", "sample"});
  c.timestep_spacing = getChoice<TimestepSpacing>(o, "timestep_spacing", what, {"leading", "linspace", "trailing"});
  c.steps_offset = getInt(o, "steps_offset", what);
  c.rescale_betas_zero_snr = requireBool(o, "rescale_betas_zero_snr", what);
  c.clip_sample = requireBool(o, "clip_sample", what);
  c.clip_sample_range = getNumber(o, "clip_sample_range", what);
  c.thresholding = requireBool(o, "thresholding", what);
  c.dynamic_thresholding_ratio = getNumber(o, "dynamic_thresholding_ratio", what);
  c.sample_max_value = getNumber(o, "sample_max_value", what);
  c.set_alpha_to_one = requireBool(o, "set_alpha_to_one", what);
  c.eta = getNumber(o, "eta", what);
  c.skip_prk_steps = requireBool(o, "skip_prk_steps", what);
  c.variance_type = getOptionalString(o, "variance_type", what);
  c.interpolation_type = getString(o, "interpolation_type", what);
  c.use_karras_sigmas = requireBool(o, "use_karras_sigmas", what);
  c.sigma_min = getOptionalNumber(o, "sigma_min", what);
  c.sigma_max = getOptionalNumber(o, "sigma_max", what);
  c.timestep_type = getString(o, "timestep_type", what);
  c.solver_order = getInt(o, "solver_order", what);
  c.algorithm_type = getString(o, "algorithm_type", what);
  c.solver_type = getString(o, "solver_type", what);
  c.lower_order_final = requireBool(o, "lower_order_final", what);
  c.euler_at_final = requireBool(o, "euler_at_final", what);
  c.use_lu_lambdas = requireBool(o, "use_lu_lambdas", what);
  c.final_sigmas_type = getString(o, "final_sigmas_type", what);
  c.lambda_min_clipped = getNumberOrMinusInfinity(o, "lambda_min_clipped", what);
  return c;
}

}  // namespace sdtune
