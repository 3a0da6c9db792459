// Pixel batches from the data pipeline (src/data): packed uint8 RGB images in,
// the float tensor the VAE wants out, converted off the JS thread in one pass.
#include <ATen/Parallel.h>
#include <napi.h>
#include <torch/torch.h>

#include <optional>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"

namespace sdtune {

namespace {

// uint8 [B, H, W, 3] -> float32 [B, 3, H, W] with v -> (v / 255 - 0.5) / 0.5, each step in float:
// exactly what torchvision's ToTensor() + Normalize([0.5], [0.5]) compute, and what the JS path
// (src/data/image.ts hwcToChw) computes, so both give the same bytes.
at::Tensor pixelsToUnitRange(const at::Tensor& hwc) {
  at::Tensor src = hwc.contiguous();  // [B, H, W, 3]
  const int64_t batch = src.size(0);
  const int64_t height = src.size(1);
  const int64_t width = src.size(2);
  at::Tensor out = at::empty({batch, 3, height, width}, at::TensorOptions().dtype(at::kFloat));  // [B, 3, H, W]
  float table[256];
  for (int v = 0; v < 256; ++v) table[v] = (static_cast<float>(v) / 255.0f - 0.5f) / 0.5f;
  const uint8_t* in = src.data_ptr<uint8_t>();
  float* base = out.data_ptr<float>();
  const int64_t plane = height * width;
  // One task per image row: rows are independent and each touches one cache line run per plane.
  at::parallel_for(0, batch * height, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / height;
      const int64_t y = row % height;
      const uint8_t* s = in + row * width * 3;
      float* r = base + b * 3 * plane + y * width;
      float* g = r + plane;
      float* bl = g + plane;
      for (int64_t x = 0; x < width; ++x) {
        r[x] = table[s[3 * x]];
        g[x] = table[s[3 * x + 1]];
        bl[x] = table[s[3 * x + 2]];
      }
    }
  });
  return out;
}

// pixelsToTensor(pixels: uint8 Tensor [B, H, W, 3]) -> Promise<float32 Tensor [B, 3, H, W]>
Napi::Value pixelsToTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor hwc = guard(env, [&]() {
    at::Tensor t = TensorHandle::unwrap(info[0], "pixels");
    if (t.scalar_type() != at::kByte || t.dim() != 4 || t.size(3) != 3 || !t.device().is_cpu()) {
      throw std::invalid_argument("pixels must be a uint8 CPU tensor [B, H, W, 3], got " + dtypeName(t.scalar_type()) +
                                  " " + c10::str(t.sizes()) + " on " + deviceName(t.device()));
    }
    return t;
  });
  return PromiseWorker<at::Tensor>::run(
      env, "sdtune:data.pixelsToTensor", [hwc]() { return pixelsToUnitRange(hwc); },
      [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorHandle::wrap(env, t); });
}

// sampleLatents(mean, {std, noise, scale}) -> Promise<Tensor>: the arithmetic of VAE.sample after the
// encoder, on a cached distribution: (mean + std * noise) * scale, with noise cast to mean's dtype and
// device first, exactly as vae_binding.cc's sample does, so cached and fresh latents match bit for bit.
// Without noise: mean * scale (the distribution's mode, what kohya caches). Without scale: no multiply.
Napi::Value sampleLatents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct Job {
    at::Tensor mean, std, noise;
    std::optional<double> scale;
  };
  Job job = guard(env, [&]() {
    Job j;
    j.mean = TensorHandle::unwrap(info[0], "mean");
    if (!at::isFloatingType(j.mean.scalar_type()) || j.mean.dim() != 4) {
      throw std::invalid_argument("mean must be a floating-point tensor [B, C, h, w], got " +
                                  dtypeName(j.mean.scalar_type()) + " " + c10::str(j.mean.sizes()));
    }
    Napi::Object o = info[1].IsUndefined() ? Napi::Object::New(env) : requireObject(info[1], "sampleLatents options");
    if (!o.Get("noise").IsUndefined()) {
      j.noise = TensorHandle::unwrap(o.Get("noise"), "sampleLatents options.noise");
      if (o.Get("std").IsUndefined()) throw std::invalid_argument("sampleLatents: noise needs std");
      j.std = TensorHandle::unwrap(o.Get("std"), "sampleLatents options.std");
      if (j.std.sizes() != j.mean.sizes() || j.noise.sizes() != j.mean.sizes()) {
        throw std::invalid_argument("sampleLatents: mean " + c10::str(j.mean.sizes()) + ", std " +
                                    c10::str(j.std.sizes()) + " and noise " + c10::str(j.noise.sizes()) +
                                    " must have one shape");
      }
      if (j.std.scalar_type() != j.mean.scalar_type() || j.std.device() != j.mean.device()) {
        throw std::invalid_argument("sampleLatents: std must have mean's dtype and device (" +
                                    dtypeName(j.mean.scalar_type()) + " on " + deviceName(j.mean.device()) + ")");
      }
    }
    j.scale = getOptionalNumber(o, "scale", "sampleLatents options");
    return j;
  });
  return PromiseWorker<at::Tensor>::run(
      env, "sdtune:data.sampleLatents",
      [job]() {
        torch::NoGradGuard noGrad;
        at::Tensor latents = job.mean;  // [B, C, h, w]
        if (job.noise.defined()) {
          latents = job.mean + job.std * job.noise.to(job.mean.device(), job.mean.scalar_type());
        }
        if (job.scale) return latents * *job.scale;  // a double scalar, as VAE.sample multiplies
        return job.noise.defined() ? latents : latents.clone();
      },
      [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorHandle::wrap(env, t); });
}

void initData(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("pixelsToTensor", Napi::Function::New(env, pixelsToTensor));
  ns.Set("sampleLatents", Napi::Function::New(env, sampleLatents));
  exports.Set("data", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(data, initData);

}  // namespace sdtune
