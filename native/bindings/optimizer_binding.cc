// AdamW and gradient clipping from JS. Training steps call the C++ classes
// directly; this handle serves custom loops, tests and tools.
#include <napi.h>

#include <mutex>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"
#include "train/adamw.h"

namespace sdtune {

namespace {

// The optimizer and the lock that keeps a running step() apart from state reads and writes.
struct AdamWHolder {
  explicit AdamWHolder(std::unique_ptr<train::AdamW> o) : optimizer(std::move(o)) {}
  std::unique_ptr<train::AdamW> optimizer;
  std::mutex mutex;
};

class AdamWHandle : public Napi::ObjectWrap<AdamWHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "AdamW",
                                      {
                                          InstanceMethod<&AdamWHandle::step>("step"),
                                          InstanceMethod<&AdamWHandle::stateDict>("stateDict"),
                                          InstanceMethod<&AdamWHandle::loadStateDict>("loadStateDict"),
                                          InstanceAccessor<&AdamWHandle::stepCount>("stepCount"),
                                          InstanceMethod<&AdamWHandle::dispose>("dispose"),
                                      });
    addonData(env).constructors["AdamW"] = Napi::Persistent(ctor);
    exports.Set("AdamW", ctor);
  }

  // new AdamW([[name, Tensor], ...], {beta1, beta2, eps, weightDecay})
  explicit AdamWHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AdamWHandle>(info) {
    Napi::Env env = info.Env();
    guard(env, [&] {
      auto params = namedTensorsFromJs(info[0], "params");
      train::AdamWOptions options;
      if (!info[1].IsUndefined()) {
        auto o = requireObject(info[1], "options");
        options.beta1 = getOptionalNumber(o, "beta1", "options").value_or(options.beta1);
        options.beta2 = getOptionalNumber(o, "beta2", "options").value_or(options.beta2);
        options.eps = getOptionalNumber(o, "eps", "options").value_or(options.eps);
        options.weightDecay = getOptionalNumber(o, "weightDecay", "options").value_or(options.weightDecay);
      }
      holder_ = std::make_shared<AdamWHolder>(std::make_unique<train::AdamW>(std::move(params), options));
    });
  }

 private:
  std::shared_ptr<AdamWHolder> live(Napi::Env env) {
    if (!holder_) throw Napi::Error::New(env, "AdamW is disposed");
    return holder_;
  }

  // State reads and writes happen on the JS thread: refuse rather than block while a step runs.
  static std::unique_lock<std::mutex> lockIdle(Napi::Env env, AdamWHolder& holder) {
    std::unique_lock<std::mutex> lock(holder.mutex, std::try_to_lock);
    if (!lock.owns_lock()) throw Napi::Error::New(env, "AdamW is busy: await the running step() first");
    return lock;
  }

  // step(lr, grads?) -> Promise<void>
  Napi::Value step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto holder = live(env);
      if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "lr must be a number");
      double lr = info[0].As<Napi::Number>().DoubleValue();
      std::vector<at::Tensor> grads;
      if (!info[1].IsUndefined()) grads = tensorsFromJs(info[1], "grads");
      return PromiseWorker<bool>::run(
          env, "sdtune:adamw.step",
          [holder, lr, grads]() {
            std::lock_guard<std::mutex> lock(holder->mutex);
            holder->optimizer->step(lr, grads);
            return true;
          },
          [](Napi::Env env, bool&) { return env.Undefined(); });
    });
  }

  Napi::Value stateDict(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto holder = live(env);
      auto lock = lockIdle(env, *holder);
      NamedTensors copies;
      for (auto& [name, t] : holder->optimizer->stateDict()) copies.emplace_back(name, t.clone());
      return namedTensorsToJs(env, copies);
    });
  }

  void loadStateDict(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    guard(env, [&] {
      std::map<std::string, at::Tensor> state;
      for (auto& [name, t] : namedTensorsFromJs(info[0], "state")) state[name] = t;
      auto holder = live(env);
      auto lock = lockIdle(env, *holder);
      holder->optimizer->loadStateDict(state);
    });
  }

  Napi::Value stepCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->optimizer->stepCount()));
  }

  void dispose(const Napi::CallbackInfo&) { holder_.reset(); }

  std::shared_ptr<AdamWHolder> holder_;
};

// clipGradNorm(grads, maxNorm) -> Promise<number>: the norm before clipping.
Napi::Value clipGradNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    auto grads = tensorsFromJs(info[0], "grads");
    if (!info[1].IsNumber()) throw Napi::TypeError::New(env, "maxNorm must be a number");
    double maxNorm = info[1].As<Napi::Number>().DoubleValue();
    return PromiseWorker<double>::run(
        env, "sdtune:clipGradNorm", [grads, maxNorm]() { return train::clipGradNorm(grads, maxNorm); },
        [](Napi::Env env, double& norm) { return Napi::Number::New(env, norm); });
  });
}

void initOptimizer(Napi::Env env, Napi::Object exports) {
  AdamWHandle::init(env, exports);
  exports.Set("clipGradNorm", Napi::Function::New(env, clipGradNorm));
}

}  // namespace

SDTUNE_REGISTER_BINDING(optimizer, initOptimizer);

}  // namespace sdtune
