// JS values <-> json::Value, for configs that cross the boundary as objects
// (scheduler configs and overrides). Runs on the JS thread.
#pragma once

#include <napi.h>

#include <string>

#include "io/json.h"

namespace sdtune {

// undefined/null -> Null; numbers may be +-Infinity (diffusers' lambda_min_clipped);
// `{key: undefined}` members are left out ("not given"). `where` names the value in errors.
json::Value toJson(const Napi::Value& value, const std::string& where, int depth = 0);

Napi::Value toJs(Napi::Env env, const json::Value& value);

}  // namespace sdtune
