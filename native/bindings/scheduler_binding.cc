// Scheduler (a sampler: setTimesteps / scaleModelInput / step) and NoiseSchedule
// (training noise: addNoise / getVelocity / snr) handles over native/sched.
// Table getters and elementwise ops are synchronous (microseconds); step() returns a
// Promise and runs on the pool, holding the sampler's lock so calls never interleave.
#include <napi.h>

#include <cmath>
#include <memory>
#include <mutex>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/generator.h"
#include "bindings/scheduler_params.h"
#include "bindings/tensor_handle.h"
#include "sched/config.h"

namespace sdtune {

namespace {

int64_t toIndex(const Napi::Value& value, const char* what) {
  double d = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || std::floor(d) != d) throw std::invalid_argument(std::string(what) + " must be an integer");
  return static_cast<int64_t>(d);
}

// ---------------------------------------------------------------- Scheduler

// Shared with in-flight workers, so a disposed handle never frees a sampler mid-step.
struct SamplerBox {
  std::mutex mutex;
  std::string name;
  sched::SamplerKind kind = sched::SamplerKind::DDPM;
  std::unique_ptr<sched::Sampler> sampler;
};

class SchedulerHandle : public Napi::ObjectWrap<SchedulerHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "Scheduler",
                                      {
                                          StaticMethod<&SchedulerHandle::create>("create"),
                                          InstanceAccessor<&SchedulerHandle::name>("name"),
                                          InstanceAccessor<&SchedulerHandle::className>("className"),
                                          InstanceAccessor<&SchedulerHandle::order>("order"),
                                          InstanceAccessor<&SchedulerHandle::numInferenceSteps>("numInferenceSteps"),
                                          InstanceAccessor<&SchedulerHandle::numCalls>("numCalls"),
                                          InstanceAccessor<&SchedulerHandle::timesteps>("timesteps"),
                                          InstanceAccessor<&SchedulerHandle::sigmas>("sigmas"),
                                          InstanceAccessor<&SchedulerHandle::initNoiseSigma>("initNoiseSigma"),
                                          InstanceMethod<&SchedulerHandle::setTimesteps>("setTimesteps"),
                                          InstanceMethod<&SchedulerHandle::timestepAt>("timestepAt"),
                                          InstanceMethod<&SchedulerHandle::scaleModelInput>("scaleModelInput"),
                                          InstanceMethod<&SchedulerHandle::addNoise>("addNoise"),
                                          InstanceMethod<&SchedulerHandle::step>("step"),
                                          InstanceMethod<&SchedulerHandle::dispose>("dispose"),
                                      });
    addonData(env).constructors["Scheduler"] = Napi::Persistent(ctor);
    exports.Set("Scheduler", ctor);
  }

  explicit SchedulerHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SchedulerHandle>(info) {}

 private:
  // Scheduler.create(name, params) -> Scheduler; params: the config TypeScript resolved
  static Napi::Value create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      if (!info[0].IsString()) throw std::invalid_argument("sampler name must be a string");
      auto box = std::make_shared<SamplerBox>();
      box->name = info[0].As<Napi::String>().Utf8Value();
      box->kind = sched::samplerKind(box->name);
      box->sampler = sched::makeSampler(box->kind, readSchedulerParams(info[1], "params"));
      Napi::Object object = addonData(env).constructors["Scheduler"].New({});
      Unwrap(object)->box_ = std::move(box);
      return object;
    });
  }

  std::shared_ptr<SamplerBox> live(Napi::Env env) const {
    if (!box_) throw Napi::Error::New(env, "Scheduler is disposed");
    return box_;
  }

  // Runs `body(sampler)` under the sampler's lock, with C++ errors as JS errors.
  template <typename F>
  Napi::Value locked(const Napi::CallbackInfo& info, F&& body) {
    Napi::Env env = info.Env();
    auto box = live(env);
    return guard(env, [&]() -> Napi::Value {
      std::lock_guard<std::mutex> lock(box->mutex);
      return body(*box->sampler);
    });
  }

  Napi::Value name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), live(info.Env())->name); }
  Napi::Value className(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), sched::className(live(info.Env())->kind));
  }
  Napi::Value order(const Napi::CallbackInfo& info) {
    return locked(info, [&](sched::Sampler& s) { return Napi::Number::New(info.Env(), s.order()); });
  }
  Napi::Value numInferenceSteps(const Napi::CallbackInfo& info) {
    return locked(info, [&](sched::Sampler& s) {
      return Napi::Number::New(info.Env(), static_cast<double>(s.numInferenceSteps()));
    });
  }
  Napi::Value numCalls(const Napi::CallbackInfo& info) {
    return locked(info,
                  [&](sched::Sampler& s) { return Napi::Number::New(info.Env(), static_cast<double>(s.numCalls())); });
  }
  // Copies: a typed-array view on the sampler's own table would let JS change it.
  Napi::Value timesteps(const Napi::CallbackInfo& info) {
    return locked(info, [&](sched::Sampler& s) -> Napi::Value {
      if (!s.timesteps().defined()) throw std::logic_error("timesteps: call setTimesteps() first");
      return TensorHandle::wrap(info.Env(), s.timesteps().clone());
    });
  }
  Napi::Value sigmas(const Napi::CallbackInfo& info) {
    return locked(info, [&](sched::Sampler& s) -> Napi::Value {
      if (s.numCalls() == 0) throw std::logic_error("sigmas: call setTimesteps() first");
      if (!s.sigmas().defined()) return info.Env().Undefined();
      return TensorHandle::wrap(info.Env(), s.sigmas().clone());
    });
  }
  Napi::Value initNoiseSigma(const Napi::CallbackInfo& info) {
    return locked(info, [&](sched::Sampler& s) -> Napi::Value {
      return TensorHandle::wrap(info.Env(), torch::tensor(s.initNoiseSigma(), at::kFloat));  // 0-dim float32
    });
  }

  Napi::Value setTimesteps(const Napi::CallbackInfo& info) {
    return locked(info, [&](sched::Sampler& s) -> Napi::Value {
      s.setTimesteps(toIndex(info[0], "steps"));
      return info.Env().Undefined();
    });
  }
  Napi::Value timestepAt(const Napi::CallbackInfo& info) {
    return locked(info, [&](sched::Sampler& s) -> Napi::Value {
      return Napi::Number::New(info.Env(), s.timestepAt(toIndex(info[0], "stepIndex")));
    });
  }
  Napi::Value scaleModelInput(const Napi::CallbackInfo& info) {
    at::Tensor sample = TensorHandle::unwrap(info[0], "sample");
    return locked(info, [&](sched::Sampler& s) -> Napi::Value {
      return TensorHandle::wrap(info.Env(), s.scaleModelInput(sample, toIndex(info[1], "stepIndex")));
    });
  }

  // addNoise(x0, noise, stepIndex) -> Tensor (img2img start latents)
  Napi::Value addNoise(const Napi::CallbackInfo& info) {
    at::Tensor x0 = TensorHandle::unwrap(info[0], "x0");
    at::Tensor noise = TensorHandle::unwrap(info[1], "noise");
    return locked(info, [&](sched::Sampler& s) -> Napi::Value {
      return TensorHandle::wrap(info.Env(), s.addNoise(x0, noise, toIndex(info[2], "stepIndex")));
    });
  }

  // step(modelOutput, stepIndex, sample, generator?) -> Promise<{prevSample, predOriginalSample?, noise?}>
  Napi::Value step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto box = live(env);
    at::Tensor modelOutput = TensorHandle::unwrap(info[0], "modelOutput");
    at::Tensor sample = TensorHandle::unwrap(info[2], "sample");
    int64_t index = guard(env, [&] { return toIndex(info[1], "stepIndex"); });
    std::vector<at::Generator> generators = toGenerators(info[3], "generator");
    return PromiseWorker<sched::StepOutput>::run(
        env, "sdtune:Scheduler.step",
        [box, modelOutput, index, sample, generators]() {
          std::lock_guard<std::mutex> lock(box->mutex);
          return box->sampler->step(modelOutput, index, sample, generators);
        },
        [](Napi::Env env, sched::StepOutput& out) -> Napi::Value {
          Napi::Object result = Napi::Object::New(env);
          result.Set("prevSample", TensorHandle::wrap(env, out.prevSample));
          if (out.predOriginalSample.defined()) {
            result.Set("predOriginalSample", TensorHandle::wrap(env, out.predOriginalSample));
          }
          if (out.noise.defined()) result.Set("noise", TensorHandle::wrap(env, out.noise));
          return result;
        });
  }

  void dispose(const Napi::CallbackInfo&) { box_.reset(); }

  std::shared_ptr<SamplerBox> box_;
};

// ---------------------------------------------------------------- NoiseSchedule

class NoiseScheduleHandle : public Napi::ObjectWrap<NoiseScheduleHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor =
        DefineClass(env, "NoiseSchedule",
                    {
                        StaticMethod<&NoiseScheduleHandle::create>("create"),
                        InstanceAccessor<&NoiseScheduleHandle::numTrainTimesteps>("numTrainTimesteps"),
                        InstanceAccessor<&NoiseScheduleHandle::predictionType>("predictionType"),
                        InstanceAccessor<&NoiseScheduleHandle::betas>("betas"),
                        InstanceAccessor<&NoiseScheduleHandle::alphasCumprod>("alphasCumprod"),
                        InstanceMethod<&NoiseScheduleHandle::addNoise>("addNoise"),
                        InstanceMethod<&NoiseScheduleHandle::getVelocity>("getVelocity"),
                        InstanceMethod<&NoiseScheduleHandle::snr>("snr"),
                        InstanceMethod<&NoiseScheduleHandle::dispose>("dispose"),
                    });
    addonData(env).constructors["NoiseSchedule"] = Napi::Persistent(ctor);
    exports.Set("NoiseSchedule", ctor);
  }

  explicit NoiseScheduleHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NoiseScheduleHandle>(info) {}

 private:
  // NoiseSchedule.create(params) -> NoiseSchedule; params: DDPMScheduler.from_config, resolved in TypeScript
  static Napi::Value create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto schedule = std::make_shared<const sched::NoiseSchedule>(readSchedulerParams(info[0], "params"));
      Napi::Object object = addonData(env).constructors["NoiseSchedule"].New({});
      Unwrap(object)->schedule_ = std::move(schedule);
      return object;
    });
  }

  const sched::NoiseSchedule& live(Napi::Env env) const {
    if (!schedule_) throw Napi::Error::New(env, "NoiseSchedule is disposed");
    return *schedule_;
  }

  Napi::Value numTrainTimesteps(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env()).numTrainTimesteps()));
  }
  Napi::Value predictionType(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), sched::toString(live(info.Env()).config().prediction_type));
  }
  Napi::Value betas(const Napi::CallbackInfo& info) {
    return TensorHandle::wrap(info.Env(), live(info.Env()).betas().clone());
  }
  Napi::Value alphasCumprod(const Napi::CallbackInfo& info) {
    return TensorHandle::wrap(info.Env(), live(info.Env()).alphasCumprod().clone());
  }

  // addNoise(x0, noise, timesteps) -> Tensor
  Napi::Value addNoise(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const auto& schedule = live(env);
    at::Tensor x0 = TensorHandle::unwrap(info[0], "x0");
    at::Tensor noise = TensorHandle::unwrap(info[1], "noise");
    at::Tensor t = TensorHandle::unwrap(info[2], "timesteps");
    return guard(env, [&]() -> Napi::Value { return TensorHandle::wrap(env, schedule.addNoise(x0, noise, t)); });
  }
  // getVelocity(x0, noise, timesteps) -> Tensor
  Napi::Value getVelocity(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const auto& schedule = live(env);
    at::Tensor x0 = TensorHandle::unwrap(info[0], "x0");
    at::Tensor noise = TensorHandle::unwrap(info[1], "noise");
    at::Tensor t = TensorHandle::unwrap(info[2], "timesteps");
    return guard(env, [&]() -> Napi::Value { return TensorHandle::wrap(env, schedule.getVelocity(x0, noise, t)); });
  }
  // snr(timesteps) -> Tensor
  Napi::Value snr(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const auto& schedule = live(env);
    at::Tensor t = TensorHandle::unwrap(info[0], "timesteps");
    return guard(env, [&]() -> Napi::Value { return TensorHandle::wrap(env, schedule.snr(t)); });
  }

  void dispose(const Napi::CallbackInfo&) { schedule_.reset(); }

  std::shared_ptr<const sched::NoiseSchedule> schedule_;
};

// ---------------------------------------------------------------- registration

void initScheduler(Napi::Env env, Napi::Object exports) {
  SchedulerHandle::init(env, exports);
  NoiseScheduleHandle::init(env, exports);
  auto names = Napi::Array::New(env);
  for (size_t i = 0; i < sched::samplerNames().size(); ++i) {
    names.Set(static_cast<uint32_t>(i), sched::samplerNames()[i]);
  }
  exports.Set("samplerNames", names);
}

}  // namespace

SDTUNE_REGISTER_BINDING(scheduler, initScheduler);

}  // namespace sdtune
