// Pixel batches from the data pipeline (src/data): packed uint8 RGB images in,
// the float tensor the VAE wants out, converted off the JS thread in one pass.
#include <ATen/Parallel.h>
#include <napi.h>

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

void initData(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("pixelsToTensor", Napi::Function::New(env, pixelsToTensor));
  exports.Set("data", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(data, initData);

}  // namespace sdtune
