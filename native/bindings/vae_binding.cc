// VAE from JS: load(options) -> Promise<VAE>; encode / sample / decode (one image
// at a time, with progress and cancellation), scalingFactor, dispose.
#include <napi.h>

#include <random>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/model_common.h"
#include "bindings/progress.h"
#include "bindings/tensor_handle.h"
#include "bindings/vae_handle.h"

namespace sdtune {

namespace {

// The resolved config (NativeVAEConfig in src/native.ts) -> VAEOptions.
models::VAEOptions readVAEOptions(const Napi::Value& value) {
  const std::string what = "vae config";
  Napi::Object c = requireObject(value, what);
  models::VAEOptions o;
  o.inChannels = getInt(c, "inChannels", what);
  o.outChannels = getInt(c, "outChannels", what);
  o.latentChannels = getInt(c, "latentChannels", what);
  o.blockOutChannels = toIntVector(c.Get("blockOutChannels"), what + ".blockOutChannels");
  o.downBlockTypes = toStringVector(c.Get("downBlockTypes"), what + ".downBlockTypes");
  o.upBlockTypes = toStringVector(c.Get("upBlockTypes"), what + ".upBlockTypes");
  o.layersPerBlock = getInt(c, "layersPerBlock", what);
  o.normNumGroups = getInt(c, "normNumGroups", what);
  o.actFn = getString(c, "actFn", what);
  o.scalingFactor = getNumber(c, "scalingFactor", what);
  o.midBlockAddAttention = getBool(c, "midBlockAddAttention", true, what);
  o.validate();
  return o;
}

// Old diffusers checkpoints name the mid-block attention query/key/value/proj_attn;
// diffusers renames them on load (_convert_deprecated_attention_blocks), so do we.
std::string renameLegacyAttention(const std::string& key) {
  if (key.find("mid_block.attentions.") == std::string::npos) return key;
  static const std::pair<std::string, std::string> table[] = {
      {".query.", ".to_q."}, {".key.", ".to_k."}, {".value.", ".to_v."}, {".proj_attn.", ".to_out.0."}};
  for (const auto& [from, to] : table) {
    auto at = key.find(from);
    if (at != std::string::npos) return key.substr(0, at) + to + key.substr(at + from.size());
  }
  return key;
}

// {onProgress, cancel} of one call, read on the JS thread.
struct CallControl {
  std::shared_ptr<ProgressSink> progress;
  std::shared_ptr<CancelToken> cancel;
  static CallControl read(const Napi::Value& value, const std::string& what) {
    CallControl c;
    if (value.IsUndefined() || value.IsNull()) return c;
    Napi::Object o = requireObject(value, what);
    c.progress = ProgressSink::fromJs(value.Env(), o.Get("onProgress"), what + ".onProgress");
    c.cancel = toCancelToken(o.Get("cancel"));
    return c;
  }
  models::AutoencoderKLImpl::ImageCallback callback(const std::string& phase) const {
    auto progress = this->progress;
    auto cancel = this->cancel;
    return [progress, cancel, phase](int64_t done, int64_t total) {
      if (progress) progress->report({phase, done, total, {}});
      if (cancel) cancel->check();
    };
  }
  void check() const {
    if (cancel) cancel->check();
  }
};

Napi::Value load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Napi::Object options = requireObject(info[0], "VAE.load options");
    models::VAEOptions config = readVAEOptions(options.Get("config"));
    ModelLoadOptions load = readModelLoadOptions(options, "VAE.load options");
    return PromiseWorker<std::shared_ptr<VAEHolder>>::run(
        env, "sdtune:vae.load",
        [config, load]() {
          auto holder = std::make_shared<VAEHolder>();
          holder->config = config;
          holder->dtype = load.dtype;
          holder->device = load.device;
          holder->module = buildModule(load, [&] { return models::AutoencoderKL(config); });
          finishLoad(*holder->module, load, "vae", renameLegacyAttention);
          return holder;
        },
        [](Napi::Env env, std::shared_ptr<VAEHolder>& holder) { return VAEHandle::wrap(env, holder); });
  });
}

Napi::Object distributionToJs(Napi::Env env, const models::LatentDistribution& d) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("moments", TensorHandle::wrap(env, d.moments));
  out.Set("mean", TensorHandle::wrap(env, d.mean));
  out.Set("logvar", TensorHandle::wrap(env, d.logvar));
  out.Set("std", TensorHandle::wrap(env, d.std));
  return out;
}

}  // namespace

void VAEHandle::init(Napi::Env env, Napi::Object exports) {
  define(env, exports,
         {
             StaticMethod("load", &load),
             InstanceMethod<&VAEHandle::encode>("encode"),
             InstanceMethod<&VAEHandle::sample>("sample"),
             InstanceMethod<&VAEHandle::decode>("decode"),
             InstanceAccessor<&VAEHandle::scalingFactor>("scalingFactor"),
             InstanceAccessor<&VAEHandle::scaleFactor>("scaleFactor"),
         });
}

// encode(images, {onProgress, cancel}) -> Promise<{moments, mean, logvar, std}>
Napi::Value VAEHandle::encode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    at::Tensor images = TensorHandle::unwrap(info[0], "images");
    CallControl control = CallControl::read(info[1], "encode options");
    return PromiseWorker<models::LatentDistribution>::run(
        env, "sdtune:vae.encode",
        [holder, images, control]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          torch::NoGradGuard noGrad;
          control.check();
          return holder->module->encode(images.to(holder->device, holder->dtype), control.callback("vae.encode"));
        },
        [](Napi::Env env, models::LatentDistribution& d) -> Napi::Value { return distributionToJs(env, d); });
  });
}

// sample(images, {seed, noise, scaled, onProgress, cancel}) -> Promise<Tensor>: mean + std * noise,
// noise = the given tensor or randn from a CPU generator seeded like torch.Generator().manual_seed(seed);
// scaled: multiplied by scaling_factor (the UNet's latent space).
Napi::Value VAEHandle::sample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    at::Tensor images = TensorHandle::unwrap(info[0], "images");
    CallControl control = CallControl::read(info[1], "sample options");
    at::Tensor noise;
    std::optional<int64_t> seed;
    bool scaled = false;
    if (info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      if (!o.Get("noise").IsUndefined()) noise = TensorHandle::unwrap(o.Get("noise"), "sample options.noise");
      seed = getOptionalInt(o, "seed", "sample options");
      scaled = getBool(o, "scaled", false, "sample options");
    }
    uint64_t seedValue = seed ? static_cast<uint64_t>(*seed) : static_cast<uint64_t>(std::random_device{}());
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:vae.sample",
        [holder, images, control, noise, seedValue, scaled]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          torch::NoGradGuard noGrad;
          control.check();
          auto d = holder->module->encode(images.to(holder->device, holder->dtype), control.callback("vae.encode"));
          at::Tensor eps = noise;
          if (eps.defined()) {
            TORCH_CHECK(eps.sizes() == d.mean.sizes(), "vae.sample: noise has shape ", eps.sizes(),
                        " but the latents are ", d.mean.sizes());
          } else {
            auto generator = at::detail::createCPUGenerator(seedValue);
            eps = at::randn(d.mean.sizes(), generator, at::TensorOptions().dtype(at::kFloat));
          }
          at::Tensor latents = d.mean + d.std * eps.to(d.mean.device(), d.mean.scalar_type());
          return scaled ? latents * holder->config.scalingFactor : latents;
        },
        [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorHandle::wrap(env, t); });
  });
}

// decode(latents, {scaled, tileSize, tileOverlap, onProgress, cancel}) -> Promise<Tensor>. Latents are
// unscaled unless `scaled` (then divided by scaling_factor first). tileSize (latent pixels) switches
// to tiled decoding.
Napi::Value VAEHandle::decode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto holder = live(env);
    at::Tensor latents = TensorHandle::unwrap(info[0], "latents");
    CallControl control = CallControl::read(info[1], "decode options");
    std::optional<int64_t> tileSize;
    double overlap = 0.25;
    bool scaled = false;
    if (info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      scaled = getBool(o, "scaled", false, "decode options");
      tileSize = getOptionalInt(o, "tileSize", "decode options");
      overlap = getOptionalNumber(o, "tileOverlap", "decode options").value_or(0.25);
      if (tileSize && *tileSize <= 0) throw std::invalid_argument("decode options.tileSize must be positive");
      if (overlap < 0 || overlap >= 1) throw std::invalid_argument("decode options.tileOverlap must be in [0, 1)");
    }
    return PromiseWorker<at::Tensor>::run(
        env, "sdtune:vae.decode",
        [holder, latents, control, tileSize, overlap, scaled]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          torch::NoGradGuard noGrad;
          control.check();
          at::Tensor z = latents.to(holder->device, holder->dtype);
          if (scaled) z = z / holder->config.scalingFactor;  // as the pipeline: latents / scaling_factor
          if (tileSize && (z.size(2) > *tileSize || z.size(3) > *tileSize)) {
            at::Tensor out = holder->module->decodeTiled(z, *tileSize, overlap);
            control.check();
            return out;
          }
          return holder->module->decode(z, control.callback("vae.decode"));
        },
        [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorHandle::wrap(env, t); });
  });
}

Napi::Value VAEHandle::scalingFactor(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), live(info.Env())->config.scalingFactor);
}

Napi::Value VAEHandle::scaleFactor(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->module->scaleFactor()));
}

SDTUNE_REGISTER_BINDING(vae, VAEHandle::init);

}  // namespace sdtune
