// The Trainer handle: one training run's step, state and models. Options are
// copied into TrainerOptions on the JS thread; every step runs on a worker with
// the models' mutexes held.
#include <napi.h>

#include <mutex>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/optimizer_options.h"
#include "bindings/process_group_handle.h"
#include "bindings/scheduler_params.h"
#include "bindings/tensor_handle.h"
#include "bindings/text_encoder_handle.h"
#include "bindings/unet_handle.h"
#include "bindings/vae_handle.h"
#include "train/trainer.h"

namespace sdtune {

namespace {

struct TrainerHolder {
  std::shared_ptr<UNetHolder> unet;
  std::shared_ptr<TextEncoderHolder> textEncoder;  // may be null
  std::shared_ptr<VAEHolder> vae;                  // may be null
  std::unique_ptr<train::Trainer> trainer;
  std::mutex mutex;  // one step at a time

  // Locks every model this trainer uses, in one fixed order (no deadlock with other users).
  std::vector<std::unique_lock<std::mutex>> lockModels() {
    std::vector<std::unique_lock<std::mutex>> locks;
    locks.emplace_back(unet->mutex);
    if (textEncoder) {
      locks.emplace_back(textEncoder->mutex);
      textEncoder->sync();
    }
    if (vae) locks.emplace_back(vae->mutex);
    return locks;
  }
};

at::Tensor optionalTensor(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return at::Tensor();
  return TensorHandle::unwrap(v, what + "." + key);
}

train::TrainerOptions readOptions(const Napi::Object& o) {
  const std::string what = "options";
  train::TrainerOptions options;
  options.noise = readSchedulerParams(o.Get("noiseSchedule"), what + ".noiseSchedule");
  options.predictionType = options.noise.prediction_type;
  if (auto p = getOptionalString(o, "predictionType", what)) {
    if (*p == "epsilon")
      options.predictionType = sched::PredictionType::Epsilon;
    else if (*p == "v_prediction")
      options.predictionType = sched::PredictionType::VPrediction;
    else
      throw std::invalid_argument("options.predictionType must be epsilon or v_prediction, got \"" + *p + "\"");
  }
  options.snrGamma = getOptionalNumber(o, "snrGamma", what).value_or(0.0);
  options.noiseOffset = getOptionalNumber(o, "noiseOffset", what).value_or(0.0);
  options.priorLossWeight = getOptionalNumber(o, "priorLossWeight", what).value_or(1.0);
  options.gradientAccumulationSteps = getOptionalInt(o, "gradientAccumulationSteps", what).value_or(1);
  options.maxGradNorm = getOptionalNumber(o, "maxGradNorm", what).value_or(0.0);
  options.seed = static_cast<uint64_t>(getOptionalInt(o, "seed", what).value_or(0));
  options.sampleLatents = getBool(o, "sampleLatents", true, what);
  options.clipSkip = getOptionalInt(o, "clipSkip", what).value_or(0);
  options.trainTextEncoder = getBool(o, "trainTextEncoder", false, what);
  if (!o.Get("adamw").IsUndefined()) {
    readAdamWOptions(requireObject(o.Get("adamw"), "options.adamw"), "options.adamw", options.optimizer.adamw);
  }
  if (!o.Get("optimizer").IsUndefined())
    options.optimizer = readOptimizerOptions(o.Get("optimizer"), "options.optimizer");
  if (!o.Get("lossScaling").IsUndefined()) {
    auto s = requireObject(o.Get("lossScaling"), "options.lossScaling");
    options.lossScaling.enabled = getBool(s, "enabled", false, "options.lossScaling");
    options.lossScaling.initScale = getOptionalNumber(s, "initScale", "").value_or(options.lossScaling.initScale);
    options.lossScaling.growthInterval =
        getOptionalInt(s, "growthInterval", "").value_or(options.lossScaling.growthInterval);
  }
  if (!o.Get("ema").IsUndefined()) {
    auto e = requireObject(o.Get("ema"), "options.ema");
    options.useEma = getBool(e, "enabled", false, "options.ema");
    options.ema.decay = getOptionalNumber(e, "decay", "options.ema").value_or(options.ema.decay);
    options.ema.useWarmup = getBool(e, "useWarmup", false, "options.ema");
  }
  return options;
}

// Every rank starts from rank 0's trained weights, and averages its gradients with the others'.
void joinProcessGroup(train::Trainer& trainer, const std::shared_ptr<dist::ProcessGroup>& group) {
  std::vector<torch::Tensor> params;
  for (const auto& g : trainer.groups()) {
    for (const auto& [name, p] : g.params) params.push_back(p);
  }
  group->broadcast(params, 0);
  trainer.setGradientReducer([group](const std::vector<torch::Tensor>& grads) { group->allReduceMean(grads); });
  group->attachReducer(params);
  trainer.setOverlappedBackward([group](const torch::Tensor& loss) { return group->backwardOverlapped(loss); });
}

// batch.globalRows / batch.globalBatch: this rank's rows of a data-parallel global batch.
void readShard(const Napi::Object& b, train::TrainBatch& batch) {
  batch.lossWeight = getOptionalNumber(b, "lossWeight", "batch").value_or(1.0);
  if (!(batch.lossWeight > 0)) throw std::invalid_argument("batch.lossWeight must be > 0");
  batch.globalRows = optionalTensor(b, "globalRows", "batch");
  if (!batch.globalRows.defined()) return;
  batch.globalBatch = getInt(b, "globalBatch", "batch");
  const auto& rows = batch.globalRows;
  if (rows.dim() != 1 || rows.numel() == 0 || rows.is_floating_point() || rows.min().item<int64_t>() < 0 ||
      rows.max().item<int64_t>() >= batch.globalBatch) {
    throw std::invalid_argument("batch.globalRows must be a non-empty 1-D integer tensor of rows in [0, globalBatch)");
  }
}

class TrainerHandle : public Napi::ObjectWrap<TrainerHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "Trainer",
                                      {
                                          StaticMethod<&TrainerHandle::create>("create"),
                                          InstanceMethod<&TrainerHandle::step>("step"),
                                          InstanceMethod<&TrainerHandle::stateDict>("stateDict"),
                                          InstanceMethod<&TrainerHandle::loadStateDict>("loadStateDict"),
                                          InstanceMethod<&TrainerHandle::copyEmaToModel>("copyEmaToModel"),
                                          InstanceAccessor<&TrainerHandle::optimizerStep>("optimizerStep"),
                                          InstanceMethod<&TrainerHandle::dispose>("dispose"),
                                      });
    addonData(env).constructors["Trainer"] = Napi::Persistent(ctor);
    exports.Set("Trainer", ctor);
  }

  explicit TrainerHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainerHandle>(info) {}

 private:
  std::shared_ptr<TrainerHolder> live(Napi::Env env) const {
    if (!holder_) throw Napi::Error::New(env, "Trainer is disposed");
    return holder_;
  }

  // Trainer.create({unet, textEncoder?, vae?, groups: [{name, params} | {name, full: true}], ...options})
  static Napi::Value create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto o = requireObject(info[0], "options");
      auto holder = std::make_shared<TrainerHolder>();
      holder->unet = UNetHandle::unwrap(o.Get("unet"), "options.unet");
      if (!o.Get("textEncoder").IsUndefined()) {
        holder->textEncoder = TextEncoderHandle::unwrap(o.Get("textEncoder"), "options.textEncoder");
      }
      if (!o.Get("vae").IsUndefined()) holder->vae = VAEHandle::unwrap(o.Get("vae"), "options.vae");
      std::shared_ptr<dist::ProcessGroup> group;  // data parallel (bindings/process_group_binding.cc)
      if (!o.Get("processGroup").IsUndefined())
        group = unwrapProcessGroup(o.Get("processGroup"), "options.processGroup");
      train::TrainerOptions options = readOptions(o);
      // Cached latents need the VAE's scaling_factor even when the VAE itself is not loaded.
      std::optional<double> scalingFactor = getOptionalNumber(o, "vaeScalingFactor", "options");
      if (!o.Get("groups").IsArray()) throw Napi::TypeError::New(env, "options.groups must be an array");
      auto groupsJs = o.Get("groups").As<Napi::Array>();
      std::vector<train::ParamGroup> groups;
      std::vector<std::pair<size_t, std::string>> fullGroups;  // filled on the worker
      for (uint32_t i = 0; i < groupsJs.Length(); ++i) {
        auto g = requireObject(groupsJs.Get(i), "options.groups[" + std::to_string(i) + "]");
        train::ParamGroup group;
        group.name = getString(g, "name", "group");
        if (group.name != "unet" && group.name != "text_encoder") {
          throw std::invalid_argument("group names are \"unet\" and \"text_encoder\", got \"" + group.name + "\"");
        }
        if (getBool(g, "full", false, "group")) {
          fullGroups.emplace_back(groups.size(), group.name);
        } else {
          group.params = namedTensorsFromJs(g.Get("params"), "group " + group.name + " params");
        }
        groups.push_back(std::move(group));
      }
      if (groups.empty()) throw std::invalid_argument("options.groups is empty: nothing to train");
      for (auto& [index, name] : fullGroups) {
        if (name == "text_encoder" && !holder->textEncoder) {
          throw std::invalid_argument("full text encoder training needs options.textEncoder");
        }
      }
      return PromiseWorker<std::shared_ptr<TrainerHolder>>::run(
          env, "sdtune:trainer.create",
          [holder, options, groups, fullGroups, scalingFactor, group]() mutable {
            auto locks = holder->lockModels();
            for (auto& [index, name] : fullGroups) {
              torch::nn::Module& module = name == "unet" ? static_cast<torch::nn::Module&>(*holder->unet->module)
                                                         : static_cast<torch::nn::Module&>(*holder->textEncoder->model);
              for (auto& item : module.named_parameters()) groups[index].params.emplace_back(item.key(), item.value());
            }
            // NaN: unknown; only batches of explicit latents can then be trained on.
            double scaling = scalingFactor.value_or(holder->vae ? holder->vae->config.scalingFactor : std::nan(""));
            holder->trainer = std::make_unique<train::Trainer>(
                holder->unet->module, holder->textEncoder ? holder->textEncoder->model : models::CLIPTextModel(nullptr),
                holder->vae ? holder->vae->module : models::AutoencoderKL(nullptr), scaling, std::move(groups),
                options);
            if (group) joinProcessGroup(*holder->trainer, group);
            return holder;
          },
          [](Napi::Env env, std::shared_ptr<TrainerHolder>& h) {
            Napi::Object object = addonData(env).constructors["Trainer"].New({});
            Unwrap(object)->holder_ = h;
            return object;
          });
    });
  }

  // step(batch, lrs, {keepPrediction}) -> Promise<StepResult>
  Napi::Value step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto holder = live(env);
      auto b = requireObject(info[0], "batch");
      train::TrainBatch batch;
      batch.pixels = optionalTensor(b, "pixels", "batch");
      batch.latentMean = optionalTensor(b, "latentMean", "batch");
      batch.latentStd = optionalTensor(b, "latentStd", "batch");
      batch.latents = optionalTensor(b, "latents", "batch");
      batch.inputIds = optionalTensor(b, "inputIds", "batch");
      batch.encoderHiddenStates = optionalTensor(b, "encoderHiddenStates", "batch");
      batch.noise = optionalTensor(b, "noise", "batch");
      batch.timesteps = optionalTensor(b, "timesteps", "batch");
      batch.priorRows = getOptionalInt(b, "priorRows", "batch").value_or(0);
      readShard(b, batch);
      if (!info[1].IsArray()) throw Napi::TypeError::New(env, "lrs must be an array of numbers");
      std::vector<double> lrs;
      auto array = info[1].As<Napi::Array>();
      for (uint32_t i = 0; i < array.Length(); ++i) {
        if (!array.Get(i).IsNumber()) throw Napi::TypeError::New(env, "lrs must be numbers");
        lrs.push_back(array.Get(i).As<Napi::Number>().DoubleValue());
      }
      bool keep = info[2].IsObject() && getBool(info[2].As<Napi::Object>(), "keepPrediction", false, "options");
      return PromiseWorker<train::StepResult>::run(
          env, "sdtune:trainer.step",
          [holder, batch, lrs, keep]() {
            std::lock_guard<std::mutex> lock(holder->mutex);
            auto locks = holder->lockModels();
            return holder->trainer->step(batch, lrs, keep);
          },
          [](Napi::Env env, train::StepResult& r) -> Napi::Value {
            Napi::Object o = Napi::Object::New(env);
            o.Set("loss", r.loss);
            o.Set("instanceLoss", r.instanceLoss);
            o.Set("priorLoss", r.priorLoss);
            o.Set("optimizerStepped", r.optimizerStepped);
            o.Set("overflow", r.overflow);
            o.Set("gradientsOverlapped", r.gradientsOverlapped);
            o.Set("gradNorm", r.gradNorm);
            o.Set("lossScale", r.lossScale);
            o.Set("microStep", static_cast<double>(r.microStep));
            o.Set("optimizerStep", static_cast<double>(r.optimizerStep));
            Napi::Object phases = Napi::Object::New(env);
            phases.Set("forward", r.phaseMs.forward);
            phases.Set("backward", r.phaseMs.backward);
            phases.Set("clip", r.phaseMs.clip);
            phases.Set("optimizer", r.phaseMs.optimizer);
            o.Set("phaseMs", phases);
            if (r.modelPred.defined()) o.Set("modelPred", TensorHandle::wrap(env, r.modelPred));
            return o;
          });
    });
  }

  // stateDict() -> Promise<[name, Tensor][]>: copies, so later steps never change what is being saved.
  Napi::Value stateDict(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto holder = live(env);
    using Named = std::vector<std::pair<std::string, at::Tensor>>;
    return PromiseWorker<Named>::run(
        env, "sdtune:trainer.stateDict",
        [holder]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          Named out;
          for (auto& [name, t] : holder->trainer->stateDict()) out.emplace_back(name, t.detach().clone());
          return out;
        },
        [](Napi::Env env, Named& items) -> Napi::Value { return namedTensorsToJs(env, items); });
  }

  Napi::Value loadStateDict(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto holder = live(env);
      std::map<std::string, at::Tensor> state;
      for (auto& [name, t] : namedTensorsFromJs(info[0], "state")) state[name] = t;
      return PromiseWorker<bool>::run(
          env, "sdtune:trainer.loadStateDict",
          [holder, state]() {
            std::lock_guard<std::mutex> lock(holder->mutex);
            auto locks = holder->lockModels();
            holder->trainer->loadStateDict(state);
            return true;
          },
          [](Napi::Env env, bool&) { return env.Undefined(); });
    });
  }

  Napi::Value copyEmaToModel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto holder = live(env);
    return PromiseWorker<bool>::run(
        env, "sdtune:trainer.copyEma",
        [holder]() {
          std::lock_guard<std::mutex> lock(holder->mutex);
          auto locks = holder->lockModels();
          holder->trainer->copyEmaToModel();
          return true;
        },
        [](Napi::Env env, bool&) { return env.Undefined(); });
  }

  Napi::Value optimizerStep(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->trainer->optimizerStep()));
  }

  void dispose(const Napi::CallbackInfo&) { holder_.reset(); }

  std::shared_ptr<TrainerHolder> holder_;
};

}  // namespace

SDTUNE_REGISTER_BINDING(trainer, TrainerHandle::init);

}  // namespace sdtune
