// The Generator handle: a seedable CPU random generator (torch.Generator semantics).
#pragma once

#include <napi.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace sdtune {

// The generator behind a JS Generator; throws a TypeError naming `what` otherwise.
at::Generator unwrapGenerator(const Napi::Value& value, const std::string& what);

// undefined/null -> none (the device's default RNG); a Generator -> one;
// an array of Generators -> one per batch row (diffusers' generator lists).
std::vector<at::Generator> toGenerators(const Napi::Value& value, const std::string& what);

}  // namespace sdtune
