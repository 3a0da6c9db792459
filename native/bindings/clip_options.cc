#include "bindings/clip_options.h"

#include <stdexcept>

#include "bindings/common.h"

namespace sdtune {

namespace {

models::CLIPEncoderOptions readEncoder(const Napi::Object& o, const std::string& what) {
  models::CLIPEncoderOptions e;
  e.hiddenSize = getInt(o, "hiddenSize", what);
  e.intermediateSize = getInt(o, "intermediateSize", what);
  e.numHiddenLayers = getInt(o, "numHiddenLayers", what);
  e.numAttentionHeads = getInt(o, "numAttentionHeads", what);
  e.hiddenAct = getString(o, "hiddenAct", what);
  e.layerNormEps = getNumber(o, "layerNormEps", what);
  e.attentionDropout = getOptionalNumber(o, "attentionDropout", what).value_or(0.0);
  return e;
}

}  // namespace

models::CLIPTextOptions readClipTextOptions(const Napi::Value& value, const std::string& what) {
  Napi::Object o = requireObject(value, what);
  models::CLIPTextOptions t;
  t.encoder = readEncoder(o, what);
  t.vocabSize = getInt(o, "vocabSize", what);
  t.maxPositionEmbeddings = getInt(o, "maxPositionEmbeddings", what);
  t.eosTokenId = getInt(o, "eosTokenId", what);
  t.validate("text_config");
  return t;
}

models::CLIPVisionOptions readClipVisionOptions(const Napi::Value& value, const std::string& what) {
  Napi::Object o = requireObject(value, what);
  models::CLIPVisionOptions v;
  v.encoder = readEncoder(o, what);
  v.numChannels = getInt(o, "numChannels", what);
  v.imageSize = getInt(o, "imageSize", what);
  v.patchSize = getInt(o, "patchSize", what);
  v.validate("vision_config");
  return v;
}

models::CLIPModelOptions readClipModelOptions(const Napi::Value& value, const std::string& what) {
  Napi::Object o = requireObject(value, what);
  models::CLIPModelOptions m;
  m.text = readClipTextOptions(o.Get("text"), what + ".text");
  m.vision = readClipVisionOptions(o.Get("vision"), what + ".vision");
  m.projectionDim = getInt(o, "projectionDim", what);
  m.logitScaleInitValue = getOptionalNumber(o, "logitScaleInitValue", what).value_or(2.6592);
  m.validate();
  return m;
}

ClipLoadRequest readClipLoadRequest(const Napi::Object& options, const std::string& what) {
  ClipLoadRequest r;
  r.files = toStringVector(options.Get("files"), "options.files");
  if (r.files.empty()) throw std::invalid_argument("options.files must name at least one safetensors file");
  r.load.what = what;
  r.load.dtype = parseDtype(getOptionalString(options, "dtype", "options").value_or("float32"));
  r.load.device = parseDevice(getOptionalString(options, "device", "options").value_or("cpu"));
  Napi::Value prefixes = options.Get("ignorePrefixes");
  if (!prefixes.IsUndefined() && !prefixes.IsNull()) {
    r.load.ignorePrefixes = toStringVector(prefixes, "options.ignorePrefixes");
  }
  return r;
}

}  // namespace sdtune
