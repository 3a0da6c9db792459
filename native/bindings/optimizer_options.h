// Reading optimizer settings from the plain objects TypeScript sends: {type, ...}
// with camelCase fields (validated by src/config/optimizer.ts; checked again here
// so a direct caller gets clear errors). Runs on the JS thread.
#pragma once

#include <napi.h>

#include <string>

#include "train/optimizer_options.h"

namespace sdtune {

// {beta1?, beta2?, eps?, weightDecay?} onto `out`.
void readAdamWOptions(const Napi::Object& o, const std::string& what, train::AdamWOptions& out);
// {type: "adamw" | "prodigy" | "adafactor" | "lion", ...that optimizer's settings}.
train::OptimizerOptions readOptimizerOptions(const Napi::Value& value, const std::string& what);

}  // namespace sdtune
