// Image ops from JS: PIL-exact resampling and transformers' CLIPImageProcessor on
// decoded uint8 images (src/eval/clip_image_processor.ts decodes with sharp).
#include <napi.h>

#include <cmath>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"
#include "image/clip_preprocess.h"
#include "image/jpeg_render.h"
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

// One JPEG of the training data pipeline, decoded on libuv's pool as sharp decodes (pure image
// work, no libtorch: it must not queue behind a training step on the executor thread).
class JpegWorker : public Napi::AsyncWorker {
 public:
  JpegWorker(Napi::Env env, Napi::Uint8Array bytes, const image::JpegRenderJob& job)
      : Napi::AsyncWorker(env, "sdtune:image.renderJpeg"),
        deferred_(Napi::Promise::Deferred::New(env)),
        bytes_(Napi::Persistent(bytes)),
        data_(bytes.Data()),
        size_(bytes.ByteLength()),
        job_(job) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      result_ = image::renderJpeg(data_, size_, job_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    if (!result_) return deferred_.Resolve(Env().Null());
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(Env(), result_->data(), result_->size()));
  }
  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Uint8Array> bytes_;  // keeps the input alive while the pool reads it
  const uint8_t* data_;
  size_t size_;
  image::JpegRenderJob job_;
  std::optional<std::vector<uint8_t>> result_;
};

image::JpegRenderJob readJpegJob(const Napi::Value& value) {
  const std::string what = "job";
  Napi::Object o = requireObject(value, what);
  image::JpegRenderJob job;
  int* fields[] = {&job.resizedWidth, &job.resizedHeight, &job.left, &job.top, &job.width, &job.height};
  const char* names[] = {"resizedWidth", "resizedHeight", "left", "top", "width", "height"};
  for (int i = 0; i < 6; ++i) {
    const int64_t v = getInt(o, names[i], what);
    if (v < 0 || v > 65535) throw std::invalid_argument(what + "." + names[i] + " must be 0..65535");
    *fields[i] = static_cast<int>(v);
  }
  job.flip = getBool(o, "flip", false, what);
  job.filter = image::parseResampleFilter(getOptionalString(o, "filter", what).value_or("lanczos"));
  job.maxPixels = getOptionalInt(o, "maxPixels", what).value_or(0);
  return job;
}

// renderJpeg(bytes: Uint8Array, job) -> Promise<Buffer | null> (null: decode it with sharp instead).
Napi::Value renderJpeg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      throw std::invalid_argument("bytes must be a Uint8Array (or Buffer)");
    }
    auto* worker = new JpegWorker(env, info[0].As<Napi::Uint8Array>(), readJpegJob(info[1]));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  });
}

void initImage(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("resize", Napi::Function::New(env, resize));
  ns.Set("clipPreprocess", Napi::Function::New(env, clipPreprocess));
  ns.Set("renderJpeg", Napi::Function::New(env, renderJpeg));
  ns.Set("jpegAvailable", Napi::Boolean::New(env, image::jpegAvailable()));
  exports.Set("image", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(image, initImage);

}  // namespace sdtune
