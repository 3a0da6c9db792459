// Reading CLIP configs and load options from the plain objects TypeScript sends
// (camelCase fields, already validated by src/models/clip_config.ts; checked again
// here so a direct caller gets the same errors). Runs on the JS thread.
#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "models/clip.h"

namespace sdtune {

models::CLIPTextOptions readClipTextOptions(const Napi::Value& value, const std::string& what);
models::CLIPVisionOptions readClipVisionOptions(const Napi::Value& value, const std::string& what);
models::CLIPModelOptions readClipModelOptions(const Napi::Value& value, const std::string& what);

// {files, dtype?, device?, ignorePrefixes?} -> files and CLIPLoadOptions (what = component name).
struct ClipLoadRequest {
  std::vector<std::string> files;
  models::CLIPLoadOptions load;
};
ClipLoadRequest readClipLoadRequest(const Napi::Object& options, const std::string& what);

}  // namespace sdtune
