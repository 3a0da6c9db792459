// Reads the fully resolved scheduler config TypeScript sends (src/config/scheduler.ts,
// resolveSchedulerParams): every SchedulerConfig field under its diffusers key.
// TypeScript has parsed, validated and resolved it; this only converts, and a
// missing or mistyped field (a bug on the TypeScript side) names the key.
#pragma once

#include <napi.h>

#include <string>

#include "sched/schedule.h"

namespace sdtune {

sched::SchedulerConfig readSchedulerParams(const Napi::Value& value, const std::string& what);

}  // namespace sdtune
