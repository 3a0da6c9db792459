// pipeline.generate(models, request, control) -> Promise: text-to-image generation as
// one AsyncWorker running the whole loop of native/pipeline/generate.h off the JS thread.
// TypeScript (src/pipeline/generate.ts) validates the request and tokenizes the prompts;
// here the request is copied into a plain GenerateRequest and the sampler is built (so a
// bad sampler config fails at the call) before the worker runs.
#include <napi.h>

#include <memory>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/progress.h"
#include "bindings/scheduler_params.h"
#include "bindings/tensor_handle.h"
#include "bindings/text_encoder_handle.h"
#include "bindings/unet_handle.h"
#include "bindings/vae_handle.h"
#include "pipeline/generate.h"
#include "sched/config.h"

namespace sdtune {

namespace {

// The holders stay alive (shared) until the worker ends, even if JS disposes a handle meanwhile.
struct Holders {
  std::shared_ptr<TextEncoderHolder> textEncoder;
  std::shared_ptr<UNetHolder> unet;
  std::shared_ptr<VAEHolder> vae;

  pipeline::Components borrow() const {
    pipeline::Components c;
    c.textEncoder = {textEncoder->model, &textEncoder->mutex, textEncoder->dtype, textEncoder->device,
                     [te = textEncoder.get()] { te->sync(); }};
    c.unet = {unet->module, &unet->mutex, unet->dtype, unet->device, nullptr};
    c.vae = {vae->module, &vae->mutex, vae->dtype, vae->device, nullptr};
    return c;
  }
};

Holders readModels(const Napi::Value& value) {
  Napi::Object o = requireObject(value, "models");
  return {TextEncoderHandle::unwrap(o.Get("textEncoder"), "models.textEncoder"),
          UNetHandle::unwrap(o.Get("unet"), "models.unet"), VAEHandle::unwrap(o.Get("vae"), "models.vae")};
}

pipeline::Output readOutput(const std::string& name) {
  if (name == "uint8") return pipeline::Output::Uint8;
  if (name == "float") return pipeline::Output::Float;
  if (name == "latent") return pipeline::Output::Latent;
  throw std::invalid_argument("request.output must be \"uint8\", \"float\" or \"latent\" (got \"" + name + "\")");
}

pipeline::GenerateRequest readRequest(const Napi::Object& o) {
  const std::string what = "request";
  pipeline::GenerateRequest r;
  r.promptIds = TensorHandle::unwrap(o.Get("promptIds"), "request.promptIds");
  if (!o.Get("negativeIds").IsUndefined()) {
    r.negativeIds = TensorHandle::unwrap(o.Get("negativeIds"), "request.negativeIds");
  }
  r.imagePrompt = toIntVector(o.Get("imagePrompt"), "request.imagePrompt");
  for (int64_t seed : toIntVector(o.Get("seeds"), "request.seeds")) {
    if (seed < 0) throw std::invalid_argument("request.seeds must be non-negative integers");
    r.seeds.push_back(static_cast<uint64_t>(seed));
  }
  if (!o.Get("latents").IsUndefined()) r.latents = TensorHandle::unwrap(o.Get("latents"), "request.latents");
  r.latentHeight = getInt(o, "latentHeight", what);
  r.latentWidth = getInt(o, "latentWidth", what);
  r.steps = getInt(o, "steps", what);
  r.guidanceScale = getNumber(o, "guidanceScale", what);
  r.guidanceRescale = getOptionalNumber(o, "guidanceRescale", what).value_or(0.0);
  r.clipSkip = getOptionalInt(o, "clipSkip", what).value_or(0);
  r.batchSize = getOptionalInt(o, "batchSize", what).value_or(1);
  r.output = readOutput(getOptionalString(o, "output", what).value_or("uint8"));
  r.returnLatents = getBool(o, "returnLatents", false, what);
  r.tileSize = getOptionalInt(o, "tileSize", what).value_or(0);
  r.tileOverlap = getOptionalNumber(o, "tileOverlap", what).value_or(0.25);
  r.capture = getBool(o, "capture", false, what);
  r.syncTimings = getBool(o, "syncTimings", false, what);
  return r;
}

Napi::Value resultToJs(Napi::Env env, pipeline::GenerateResult& r) {
  Napi::Object out = Napi::Object::New(env);
  if (r.images.defined()) out.Set("images", TensorHandle::wrap(env, r.images));
  if (r.latents.defined()) out.Set("latents", TensorHandle::wrap(env, r.latents));
  Napi::Object timings = Napi::Object::New(env);
  timings.Set("textEncoder", r.timings.textEncoder);
  timings.Set("denoise", r.timings.denoise);
  timings.Set("unet", r.timings.unet);
  timings.Set("decode", r.timings.decode);
  out.Set("timings", timings);
  if (!r.captured.empty()) {
    Napi::Object captured = Napi::Object::New(env);
    for (const auto& [name, t] : r.captured) captured.Set(name, TensorHandle::wrap(env, t));
    out.Set("captured", captured);
  }
  return out;
}

// generate(models, request, {onProgress, cancel}?)
Napi::Value generate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    Holders holders = readModels(info[0]);
    Napi::Object request = requireObject(info[1], "request");
    pipeline::GenerateRequest r = readRequest(request);
    std::shared_ptr<sched::Sampler> sampler =
        sched::makeSampler(sched::samplerKind(getString(request, "sampler", "request")),
                           readSchedulerParams(request.Get("schedulerParams"), "request.schedulerParams"));
    std::shared_ptr<ProgressSink> progress;
    std::shared_ptr<CancelToken> cancel;
    if (!info[2].IsUndefined() && !info[2].IsNull()) {
      Napi::Object control = requireObject(info[2], "control");
      progress = ProgressSink::fromJs(env, control.Get("onProgress"), "control.onProgress");
      cancel = toCancelToken(control.Get("cancel"));
    }
    return PromiseWorker<pipeline::GenerateResult>::run(
        env, "sdtune:pipeline.generate",
        [holders, r, sampler, progress, cancel]() {
          pipeline::Hooks hooks;
          if (progress) {
            hooks.progress = [progress](const std::string& phase, int64_t step, int64_t total,
                                        const std::map<std::string, double>& values) {
              progress->report({phase, step, total, values});
            };
          }
          if (cancel) hooks.checkCancel = [cancel] { cancel->check(); };
          return pipeline::generate(holders.borrow(), *sampler, r, hooks);
        },
        resultToJs);
  });
}

void init(Napi::Env env, Napi::Object exports) {
  Napi::Object pipeline = Napi::Object::New(env);
  pipeline.Set("generate", Napi::Function::New(env, generate, "generate"));
  exports.Set("pipeline", pipeline);
}

}  // namespace

SDTUNE_REGISTER_BINDING(pipeline, init);

}  // namespace sdtune
