#include "sched/config.h"

#include <cmath>
#include <initializer_list>
#include <set>
#include <stdexcept>

namespace sdtune::sched {

namespace {

// ---------------------------------------------------------------- which class takes which key

enum KindBit : unsigned { kDdpm = 1, kDdim = 2, kPndm = 4, kEuler = 8, kEulerA = 16, kDpm = 32, kAll = 63 };

unsigned bitOf(SamplerKind kind) {
  switch (kind) {
    case SamplerKind::DDPM: return kDdpm;
    case SamplerKind::DDIM: return kDdim;
    case SamplerKind::PNDM: return kPndm;
    case SamplerKind::EulerDiscrete: return kEuler;
    case SamplerKind::EulerAncestral: return kEulerA;
    case SamplerKind::DPMSolverMultistep: return kDpm;
  }
  return 0;
}

// The __init__ defaults of each diffusers 0.27.2 class where they differ from SchedulerConfig's.
SchedulerConfig defaultsFor(SamplerKind kind) {
  SchedulerConfig c;
  const bool sigmaBased = kind == SamplerKind::EulerDiscrete || kind == SamplerKind::EulerAncestral ||
                          kind == SamplerKind::DPMSolverMultistep;
  c.timestep_spacing = sigmaBased ? TimestepSpacing::Linspace : TimestepSpacing::Leading;
  c.clip_sample = kind == SamplerKind::DDPM || kind == SamplerKind::DDIM;
  c.set_alpha_to_one = kind == SamplerKind::DDIM;
  if (kind == SamplerKind::DDPM) c.variance_type = "fixed_small";
  return c;
}

// ---------------------------------------------------------------- JSON value readers

std::string describe(const json::Value& v) {
  switch (v.kind) {
    case json::Value::Kind::Null: return "null";
    case json::Value::Kind::Bool: return v.boolean ? "true" : "false";
    case json::Value::Kind::Number: return c10::str(v.number);
    case json::Value::Kind::String: return "\"" + v.string + "\"";
    case json::Value::Kind::Array: return "an array";
    case json::Value::Kind::Object: return "an object";
  }
  return "?";
}

[[noreturn]] void badValue(const std::string& where, const std::string& expected, const json::Value& v) {
  throw std::invalid_argument(where + " must be " + expected + " (got " + describe(v) + ")");
}

bool asBool(const json::Value& v, const std::string& where) {
  if (v.kind != json::Value::Kind::Bool) badValue(where, "true or false", v);
  return v.boolean;
}

double asNumber(const json::Value& v, const std::string& where) {
  if (!v.isNumber() || !std::isfinite(v.number)) badValue(where, "a finite number", v);
  return v.number;
}

int64_t asInt(const json::Value& v, const std::string& where) {
  if (!v.isNumber() || std::floor(v.number) != v.number || std::fabs(v.number) > 9007199254740991.0) {
    badValue(where, "an integer", v);
  }
  return static_cast<int64_t>(v.number);
}

std::string asString(const json::Value& v, const std::string& where) {
  if (!v.isString()) badValue(where, "a string", v);
  return v.string;
}

// The index of v's string in `choices`.
size_t asChoice(const json::Value& v, const std::string& where, std::initializer_list<const char*> choices) {
  std::string list;
  size_t i = 0;
  for (const char* choice : choices) {
    if (v.isString() && v.string == choice) return i;
    list += (i++ ? ", \"" : "one of \"") + std::string(choice) + "\"";
  }
  badValue(where, list, v);
}

// ---------------------------------------------------------------- JSON value writers

json::Value number(double d) {
  json::Value v;
  v.kind = json::Value::Kind::Number;
  v.number = d;
  return v;
}
json::Value boolean(bool b) {
  json::Value v;
  v.kind = json::Value::Kind::Bool;
  v.boolean = b;
  return v;
}
json::Value string(const std::string& s) {
  json::Value v;
  v.kind = json::Value::Kind::String;
  v.string = s;
  return v;
}
json::Value orNull(const std::optional<double>& d) {
  return d ? number(*d) : json::Value();
}
json::Value orNull(const std::optional<std::string>& s) {
  return s ? string(*s) : json::Value();
}

// ---------------------------------------------------------------- the fields

using Reader = void (*)(SchedulerConfig&, const json::Value&, const std::string& where);
using Writer = json::Value (*)(const SchedulerConfig&);

struct Field {
  const char* key;
  unsigned kinds;  // KindBit mask of the classes that take it
  Reader read;
  Writer write;
};

#define SDTUNE_FIELD(key, kinds, readBody, writeBody)                                                 \
  Field {                                                                                             \
    key, kinds, [](SchedulerConfig& c, const json::Value& v, const std::string& where) { readBody; }, \
        [](const SchedulerConfig& c) -> json::Value { return writeBody; }                             \
  }

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      SDTUNE_FIELD(
          "num_train_timesteps", kAll,
          {
            c.num_train_timesteps = asInt(v, where);
            if (c.num_train_timesteps < 1) badValue(where, "at least 1", v);
          },
          number(static_cast<double>(c.num_train_timesteps))),
      SDTUNE_FIELD("beta_start", kAll, c.beta_start = asNumber(v, where), number(c.beta_start)),
      SDTUNE_FIELD("beta_end", kAll, c.beta_end = asNumber(v, where), number(c.beta_end)),
      SDTUNE_FIELD("beta_schedule", kAll,
                   c.beta_schedule = static_cast<BetaSchedule>(
                       asChoice(v, where, {"linear", "scaled_linear", "squaredcos_cap_v2"})),
                   string(toString(c.beta_schedule))),
      SDTUNE_FIELD(
          "trained_betas", kAll,
          {
            if (v.kind == json::Value::Kind::Null) {
              c.trained_betas.reset();
              return;
            }
            if (!v.isArray()) badValue(where, "null or an array of numbers", v);
            std::vector<double> betas;
            for (const json::Value& b : v.array) betas.push_back(asNumber(b, where + " entries"));
            c.trained_betas = betas;
          },
          [&c] {
            if (!c.trained_betas) return json::Value();
            json::Value array;
            array.kind = json::Value::Kind::Array;
            for (double b : *c.trained_betas) array.array.push_back(number(b));
            return array;
          }()),
      SDTUNE_FIELD("prediction_type", kAll,
                   c.prediction_type =
                       static_cast<PredictionType>(asChoice(v, where, {"epsilon", "v_prediction", "sample"})),
                   string(toString(c.prediction_type))),
      SDTUNE_FIELD("timestep_spacing", kAll,
                   c.timestep_spacing =
                       static_cast<TimestepSpacing>(asChoice(v, where, {"leading", "linspace", "trailing"})),
                   string(toString(c.timestep_spacing))),
      SDTUNE_FIELD("steps_offset", kAll, c.steps_offset = asInt(v, where),
                   number(static_cast<double>(c.steps_offset))),
      SDTUNE_FIELD("rescale_betas_zero_snr", kDdpm | kDdim | kEuler | kEulerA | kDpm,
                   c.rescale_betas_zero_snr = asBool(v, where), boolean(c.rescale_betas_zero_snr)),
      SDTUNE_FIELD("clip_sample", kDdpm | kDdim, c.clip_sample = asBool(v, where), boolean(c.clip_sample)),
      SDTUNE_FIELD("clip_sample_range", kDdpm | kDdim, c.clip_sample_range = asNumber(v, where),
                   number(c.clip_sample_range)),
      SDTUNE_FIELD("thresholding", kDdpm | kDdim | kDpm, c.thresholding = asBool(v, where), boolean(c.thresholding)),
      SDTUNE_FIELD(
          "dynamic_thresholding_ratio", kDdpm | kDdim | kDpm,
          {
            c.dynamic_thresholding_ratio = asNumber(v, where);
            if (!(c.dynamic_thresholding_ratio > 0 && c.dynamic_thresholding_ratio <= 1)) {
              badValue(where, "in (0, 1]", v);
            }
          },
          number(c.dynamic_thresholding_ratio)),
      SDTUNE_FIELD("sample_max_value", kDdpm | kDdim | kDpm, c.sample_max_value = asNumber(v, where),
                   number(c.sample_max_value)),
      SDTUNE_FIELD("set_alpha_to_one", kDdim | kPndm, c.set_alpha_to_one = asBool(v, where),
                   boolean(c.set_alpha_to_one)),
      SDTUNE_FIELD("eta", kDdim, c.eta = asNumber(v, where), number(c.eta)),
      SDTUNE_FIELD("skip_prk_steps", kPndm, c.skip_prk_steps = asBool(v, where), boolean(c.skip_prk_steps)),
      SDTUNE_FIELD("variance_type", kDdpm | kDpm,
                   c.variance_type = v.kind == json::Value::Kind::Null ? std::nullopt
                                                                       : std::optional<std::string>(asString(v, where)),
                   orNull(c.variance_type)),
      SDTUNE_FIELD("interpolation_type", kEuler, c.interpolation_type = asString(v, where),
                   string(c.interpolation_type)),
      SDTUNE_FIELD("use_karras_sigmas", kEuler | kDpm, c.use_karras_sigmas = asBool(v, where),
                   boolean(c.use_karras_sigmas)),
      SDTUNE_FIELD("sigma_min", kEuler,
                   c.sigma_min =
                       v.kind == json::Value::Kind::Null ? std::nullopt : std::optional<double>(asNumber(v, where)),
                   orNull(c.sigma_min)),
      SDTUNE_FIELD("sigma_max", kEuler,
                   c.sigma_max =
                       v.kind == json::Value::Kind::Null ? std::nullopt : std::optional<double>(asNumber(v, where)),
                   orNull(c.sigma_max)),
      SDTUNE_FIELD("timestep_type", kEuler, c.timestep_type = asString(v, where), string(c.timestep_type)),
      SDTUNE_FIELD("solver_order", kDpm, c.solver_order = asInt(v, where),
                   number(static_cast<double>(c.solver_order))),
      SDTUNE_FIELD("algorithm_type", kDpm, c.algorithm_type = asString(v, where), string(c.algorithm_type)),
      SDTUNE_FIELD("solver_type", kDpm, c.solver_type = asString(v, where), string(c.solver_type)),
      SDTUNE_FIELD("lower_order_final", kDpm, c.lower_order_final = asBool(v, where), boolean(c.lower_order_final)),
      SDTUNE_FIELD("euler_at_final", kDpm, c.euler_at_final = asBool(v, where), boolean(c.euler_at_final)),
      SDTUNE_FIELD("use_lu_lambdas", kDpm, c.use_lu_lambdas = asBool(v, where), boolean(c.use_lu_lambdas)),
      SDTUNE_FIELD("final_sigmas_type", kDpm, c.final_sigmas_type = asString(v, where), string(c.final_sigmas_type)),
      SDTUNE_FIELD(
          "lambda_min_clipped", kDpm,
          {
            // -inf (no clipping) is the default and what saved configs hold.
            if (!v.isNumber() || std::isnan(v.number)) badValue(where, "a number", v);
            c.lambda_min_clipped = v.number;
          },
          number(c.lambda_min_clipped)),
  };
  return table;
}

#undef SDTUNE_FIELD

const Field* findField(const std::string& key) {
  for (const Field& f : fields()) {
    if (key == f.key) return &f;
  }
  return nullptr;
}

// ---------------------------------------------------------------- sampler names

struct NamedSampler {
  const char* name;
  SamplerKind kind;
  void (*preset)(SchedulerConfig&);
};

void noPreset(SchedulerConfig&) {}
void dpmpp2m(SchedulerConfig& c) {
  c.algorithm_type = "dpmsolver++";
  c.solver_order = 2;
  c.use_karras_sigmas = false;
}
void dpmpp2mKarras(SchedulerConfig& c) {
  dpmpp2m(c);
  c.use_karras_sigmas = true;
}

const std::vector<NamedSampler>& namedSamplers() {
  static const std::vector<NamedSampler> table = {
      {"ddpm", SamplerKind::DDPM, noPreset},
      {"ddim", SamplerKind::DDIM, noPreset},
      {"pndm", SamplerKind::PNDM, noPreset},
      {"euler", SamplerKind::EulerDiscrete, noPreset},
      {"euler_ancestral", SamplerKind::EulerAncestral, noPreset},
      {"dpmpp_2m", SamplerKind::DPMSolverMultistep, dpmpp2m},
      {"dpmpp_2m_karras", SamplerKind::DPMSolverMultistep, dpmpp2mKarras},
      {"dpm_multistep", SamplerKind::DPMSolverMultistep, noPreset},
  };
  return table;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

const std::vector<std::string>& samplerNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& s : namedSamplers()) out.emplace_back(s.name);
    return out;
  }();
  return names;
}

const char* className(SamplerKind kind) {
  switch (kind) {
    case SamplerKind::DDPM: return "DDPMScheduler";
    case SamplerKind::DDIM: return "DDIMScheduler";
    case SamplerKind::PNDM: return "PNDMScheduler";
    case SamplerKind::EulerDiscrete: return "EulerDiscreteScheduler";
    case SamplerKind::EulerAncestral: return "EulerAncestralDiscreteScheduler";
    case SamplerKind::DPMSolverMultistep: return "DPMSolverMultistepScheduler";
  }
  return "?";
}

ResolvedConfig resolveConfig(const std::string& name, const json::Value& config, const json::Value& overrides) {
  const NamedSampler* named = nullptr;
  for (const auto& s : namedSamplers()) {
    if (name == s.name) named = &s;
  }
  if (!named) {
    throw std::invalid_argument("unknown sampler \"" + name + "\"; valid samplers: " + joined(samplerNames()));
  }
  if (!config.isObject()) throw std::invalid_argument("the scheduler config must be a JSON object");
  if (overrides.kind != json::Value::Kind::Null && !overrides.isObject()) {
    throw std::invalid_argument("scheduler overrides must be an object");
  }
  const unsigned bit = bitOf(named->kind);
  SchedulerConfig c = defaultsFor(named->kind);

  // Keys saved as "defaults used" take this class's own default instead.
  std::set<std::string> useDefaults;
  if (const json::Value* list = config.find("_use_default_values"); list && list->isArray()) {
    for (const json::Value& key : list->array) {
      if (key.isString()) useDefaults.insert(key.string);
    }
  }
  for (const auto& [key, value] : config.object) {
    if (key.empty() || key[0] == '_' || useDefaults.count(key)) continue;
    const Field* field = findField(key);
    if (!field || !(field->kinds & bit)) continue;  // another class's parameter: ignored, as diffusers does
    field->read(c, value, "scheduler config field \"" + key + "\"");
  }
  named->preset(c);

  for (const auto& [key, value] : overrides.object) {
    const Field* field = findField(key);
    if (!field || !(field->kinds & bit)) {
      std::vector<std::string> accepted;
      for (const Field& f : fields()) {
        if (f.kinds & bit) accepted.emplace_back(f.key);
      }
      throw std::invalid_argument("scheduler option \"" + key + "\" does not apply to the " + name + " sampler (" +
                                  className(named->kind) + "); it takes: " + joined(accepted));
    }
    field->read(c, value, "scheduler option \"" + key + "\"");
  }
  return {name, named->kind, c};
}

json::Value effectiveConfig(const ResolvedConfig& resolved) {
  json::Value out;
  out.kind = json::Value::Kind::Object;
  const unsigned bit = bitOf(resolved.kind);
  for (const Field& f : fields()) {
    if (f.kinds & bit) out.object.emplace_back(f.key, f.write(resolved.config));
  }
  return out;
}

std::unique_ptr<Sampler> makeSampler(const std::string& name, const json::Value& config, const json::Value& overrides) {
  ResolvedConfig resolved = resolveConfig(name, config, overrides);
  return makeSampler(resolved.kind, resolved.config);
}

SchedulerConfig resolveNoiseScheduleConfig(const json::Value& config, const json::Value& overrides) {
  return resolveConfig("ddpm", config, overrides).config;
}

}  // namespace sdtune::sched
