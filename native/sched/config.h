// Sampler names and the diffusers classes they reproduce. The scheduler config
// itself (diffusers' `Cls.from_config(config, **overrides)`: class defaults,
// "_use_default_values", sampler presets such as dpmpp_2m, overrides) is parsed and
// resolved once in TypeScript (src/config/scheduler.ts); what crosses is a fully
// resolved SchedulerConfig (native/bindings/scheduler_params.cc reads it).
#pragma once

#include <string>
#include <vector>

#include "sched/sampler.h"

namespace sdtune::sched {

// The diffusers class a sampler kind corresponds to ("DDIMScheduler", ...).
const char* className(SamplerKind kind);

// The algorithm behind a sampler name (dpmpp_2m, dpmpp_2m_karras and dpm_multistep are all
// DPM-Solver multistep; their presets are config values set in TypeScript). Throws naming
// the valid samplers for an unknown name.
SamplerKind samplerKind(const std::string& name);

}  // namespace sdtune::sched
