// Image ops from JS: PIL-exact resampling and transformers' CLIPImageProcessor on
// decoded uint8 images (src/eval/clip_image_processor.ts decodes with sharp).
#include <napi.h>

#include <cmath>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"
#include "image/clip_preprocess.h"
#include "image/resample.h"

namespace sdtune {

namespace {

Napi::Value wrapTensor(Napi::Env env, at::Tensor& t) {
  return TensorHandle::wrap(env, t);
}

std::vector<double> toNumberVector(const Napi::Value& value, const std::string& what) {
  if (!value.IsArray()) throw std::invalid_argument(what + " must be an array of numbers");
  auto array = value.As<Napi::Array>();
  std::vector<double> out;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value v = array.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d)) throw std::invalid_argument(what + "[" + std::to_string(i) + "] must be a finite number");
    out.push_back(d);
  }
  return out;
}

at::Tensor requireImage(const Napi::Value& value, const std::string& what) {
  at::Tensor t = TensorHandle::unwrap(value, what);
  if (t.scalar_type() != at::kByte || t.dim() != 3 || t.size(2) < 1 || t.size(2) > 4 || !t.device().is_cpu()) {
    throw std::invalid_argument(what + " must be a uint8 CPU tensor [H, W, C] with 1..4 channels, got " +
                                dtypeName(t.scalar_type()) + " " + c10::str(t.sizes()) + " on " +
                                deviceName(t.device()));
  }
  return t;
}

// resize(pixels uint8 [H, W, C], {width, height, filter?}) -> Promise<uint8 Tensor [height, width, C]>
Napi::Value resize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    at::Tensor src = requireImage(info[0], "pixels");
    Napi::Object o = requireObject(info[1], "options");
    const int64_t width = getInt(o, "width", "options");
    const int64_t height = getInt(o, "height", "options");
    if (width <= 0 || height <= 0 || width > 65535 || height > 65535) {
      throw std::invalid_argument("options.width and options.height must be 1..65535");
    }
    auto filter = image::parseResampleFilter(getOptionalString(o, "filter", "options").value_or("bicubic"));
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:image.resize",
        [src, width, height, filter]() {
          at::Tensor in = src.contiguous();
          at::Tensor out = at::empty({height, width, in.size(2)}, in.options());  // [height, width, C]
          image::resample8(in.data_ptr<uint8_t>(), static_cast<int>(in.size(1)), static_cast<int>(in.size(0)),
                           static_cast<int>(in.size(2)), out.data_ptr<uint8_t>(), static_cast<int>(width),
                           static_cast<int>(height), filter);
          return out;
        },
        wrapTensor);
  });
}

image::ClipPreprocessOptions readClipPreprocessOptions(const Napi::Value& value) {
  const std::string what = "options";
  Napi::Object o = requireObject(value, what);
  image::ClipPreprocessOptions p;
  p.doResize = getBool(o, "doResize", true, what);
  p.shortestEdge = getOptionalInt(o, "shortestEdge", what);
  p.resizeHeight = getOptionalInt(o, "height", what);
  p.resizeWidth = getOptionalInt(o, "width", what);
  p.filter = image::resampleFilterFromPil(getOptionalInt(o, "resample", what).value_or(3));
  p.doCenterCrop = getBool(o, "doCenterCrop", true, what);
  p.cropHeight = getOptionalInt(o, "cropHeight", what).value_or(224);
  p.cropWidth = getOptionalInt(o, "cropWidth", what).value_or(224);
  p.doRescale = getBool(o, "doRescale", true, what);
  p.rescaleFactor = getOptionalNumber(o, "rescaleFactor", what).value_or(1.0 / 255.0);
  p.doNormalize = getBool(o, "doNormalize", true, what);
  if (!o.Get("mean").IsUndefined()) p.imageMean = toNumberVector(o.Get("mean"), what + ".mean");
  if (!o.Get("std").IsUndefined()) p.imageStd = toNumberVector(o.Get("std"), what + ".std");
  p.validate();
  return p;
}

// clipPreprocess(images: uint8 Tensor[H, W, 3][], options) -> Promise<float32 Tensor [n, 3, H', W']>
Napi::Value clipPreprocess(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!info[0].IsArray()) throw std::invalid_argument("images must be an array of tensors");
    auto array = info[0].As<Napi::Array>();
    std::vector<at::Tensor> images;
    for (uint32_t i = 0; i < array.Length(); ++i) {
      at::Tensor t = requireImage(array.Get(i), "images[" + std::to_string(i) + "]");
      if (t.size(2) != 3) {
        throw std::invalid_argument("images[" + std::to_string(i) + "] must have 3 channels (RGB), got " +
                                    std::to_string(t.size(2)));
      }
      images.push_back(t);
    }
    if (images.empty()) throw std::invalid_argument("images is empty");
    image::ClipPreprocessOptions options = readClipPreprocessOptions(info[1]);
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:image.clipPreprocess", [images, options]() { return image::clipPreprocess(images, options); },
        wrapTensor);
  });
}

void initImage(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("resize", Napi::Function::New(env, resize));
  ns.Set("clipPreprocess", Napi::Function::New(env, clipPreprocess));
  exports.Set("image", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(image, initImage);

}  // namespace sdtune
