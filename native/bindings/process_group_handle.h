// The ProcessGroup handle (bindings/process_group_binding.cc), readable by other bindings
// (the trainer takes one to average its gradients).
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "parallel/process_group.h"

namespace sdtune {

// The group behind a JS ProcessGroup; throws a TypeError naming `what` if it is not a live one.
std::shared_ptr<dist::ProcessGroup> unwrapProcessGroup(const Napi::Value& value, const std::string& what);

}  // namespace sdtune
