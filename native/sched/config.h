// From a model's scheduler/scheduler_config.json to a sampler, with diffusers'
// `Cls.from_config(config, **overrides)` semantics:
//   * the sampler's class defaults apply to every init parameter the config lacks
//     (they differ per class: e.g. timestep_spacing is "leading" for DDIM/PNDM/DDPM
//     and "linspace" for Euler/DPM-Solver; clip_sample defaults to true for DDIM/DDPM);
//   * keys listed in the config's "_use_default_values", keys starting with "_" and
//     keys the class does not take are ignored;
//   * overrides win over the config; an override the sampler does not take is an error.
// Sampler names add preset overrides: dpmpp_2m = DPM-Solver++ order 2 without Karras
// sigmas, dpmpp_2m_karras = the same with Karras sigmas, dpm_multistep = the config as is.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/json.h"
#include "sched/sampler.h"

namespace sdtune::sched {

struct ResolvedConfig {
  std::string name;  // the sampler name asked for
  SamplerKind kind;
  SchedulerConfig config;
};

// The diffusers class a sampler kind corresponds to ("DDIMScheduler", ...).
const char* className(SamplerKind kind);

// Resolves a raw config (a JSON object, e.g. scheduler_config.json) plus overrides (a JSON
// object or null) for the sampler `name`. Errors name the field and what is accepted.
ResolvedConfig resolveConfig(const std::string& name, const json::Value& config, const json::Value& overrides);

// The effective init parameters of the sampler's diffusers class (plus sampler options
// such as DDIM's eta), as a JSON object with diffusers' key names.
json::Value effectiveConfig(const ResolvedConfig& resolved);

// resolveConfig + makeSampler.
std::unique_ptr<Sampler> makeSampler(const std::string& name, const json::Value& config, const json::Value& overrides);

// The training noise schedule: DDPMScheduler.from_config(config) (as the training scripts load it).
SchedulerConfig resolveNoiseScheduleConfig(const json::Value& config, const json::Value& overrides);

}  // namespace sdtune::sched
