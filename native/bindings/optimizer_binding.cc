// The optimizers (AdamW, and any of them by type) and gradient clipping from JS. Training steps call the C++ classes
// directly; this handle serves custom loops, tests and tools.
#include <napi.h>

#include <mutex>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/optimizer_options.h"
#include "bindings/tensor_handle.h"
#include "train/adamw.h"

namespace sdtune {

namespace {

// The optimizer and the lock that keeps a running step() apart from state reads and writes.
struct OptimizerHolder {
  explicit OptimizerHolder(std::unique_ptr<train::Optimizer> o) : optimizer(std::move(o)) {}
  std::unique_ptr<train::Optimizer> optimizer;
  std::mutex mutex;
};

// new AdamW([[name, Tensor], ...], {beta1, beta2, eps, weightDecay})
struct AdamWClass {
  static constexpr const char* name = "AdamW";
  static std::unique_ptr<train::Optimizer> make(const Napi::CallbackInfo& info) {
    auto params = namedTensorsFromJs(info[0], "params");
    train::AdamWOptions options;
    if (!info[1].IsUndefined()) readAdamWOptions(requireObject(info[1], "options"), "options", options);
    return std::make_unique<train::AdamW>(std::move(params), options);
  }
};

// new Optimizer([[name, Tensor], ...], {type: "adamw" | "prodigy" | "adafactor" | "lion", ...})
struct AnyOptimizerClass {
  static constexpr const char* name = "Optimizer";
  static std::unique_ptr<train::Optimizer> make(const Napi::CallbackInfo& info) {
    auto params = namedTensorsFromJs(info[0], "params");
    return train::makeOptimizer(std::move(params), readOptimizerOptions(info[1], "options"));
  }
};

template <class Class>
class OptimizerHandle : public Napi::ObjectWrap<OptimizerHandle<Class>> {
  using Self = OptimizerHandle<Class>;

 public:
  static void init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = Self::DefineClass(env, Class::name,
                                            {
                                                Self::template InstanceMethod<&Self::step>("step"),
                                                Self::template InstanceMethod<&Self::stateDict>("stateDict"),
                                                Self::template InstanceMethod<&Self::loadStateDict>("loadStateDict"),
                                                Self::template InstanceAccessor<&Self::stepCount>("stepCount"),
                                                Self::template InstanceMethod<&Self::dispose>("dispose"),
                                            });
    addonData(env).constructors[Class::name] = Napi::Persistent(ctor);
    exports.Set(Class::name, ctor);
  }

  explicit OptimizerHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Self>(info) {
    guard(info.Env(), [&] { holder_ = std::make_shared<OptimizerHolder>(Class::make(info)); });
  }

 private:
  std::shared_ptr<OptimizerHolder> live(Napi::Env env) {
    if (!holder_) throw Napi::Error::New(env, std::string(Class::name) + " is disposed");
    return holder_;
  }

  // State reads and writes happen on the JS thread: refuse rather than block while a step runs.
  static std::unique_lock<std::mutex> lockIdle(Napi::Env env, OptimizerHolder& holder) {
    std::unique_lock<std::mutex> lock(holder.mutex, std::try_to_lock);
    if (!lock.owns_lock()) {
      throw Napi::Error::New(env, std::string(Class::name) + " is busy: await the running step() first");
    }
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
          env, "sdtune:optimizer.step",
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

  std::shared_ptr<OptimizerHolder> holder_;
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
  OptimizerHandle<AdamWClass>::init(env, exports);
  OptimizerHandle<AnyOptimizerClass>::init(env, exports);
  exports.Set("clipGradNorm", Napi::Function::New(env, clipGradNorm));
}

}  // namespace

SDTUNE_REGISTER_BINDING(optimizer, initOptimizer);

}  // namespace sdtune
