// ProcessGroup: c10d's collectives for data-parallel training (parallel/process_group.h).
// Every call runs on the executor thread, so collectives are ordered with the training
// steps that use the same group.
#include <napi.h>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/process_group_handle.h"
#include "bindings/tensor_handle.h"

namespace sdtune {

namespace {

using Group = std::shared_ptr<dist::ProcessGroup>;

dist::ProcessGroupOptions readOptions(const Napi::Object& o) {
  const std::string what = "processGroup options";
  dist::ProcessGroupOptions options;
  options.masterAddr = getString(o, "masterAddr", what);
  options.masterPort = static_cast<int>(getInt(o, "masterPort", what));
  options.rank = static_cast<int>(getInt(o, "rank", what));
  options.worldSize = static_cast<int>(getInt(o, "worldSize", what));
  int64_t timeoutMs = getOptionalInt(o, "timeoutMs", what).value_or(30 * 60 * 1000);
  if (timeoutMs < 1) throw std::invalid_argument(what + ".timeoutMs must be >= 1");
  options.timeout = std::chrono::milliseconds(timeoutMs);
  options.backend = getOptionalString(o, "backend", what).value_or("gloo");
  if (options.backend != "gloo" && options.backend != "nccl") {
    throw std::invalid_argument(what + ".backend must be \"gloo\" or \"nccl\", got \"" + options.backend + "\"");
  }
  int64_t bucketMb = getOptionalInt(o, "bucketMb", what).value_or(25);
  if (bucketMb < 1) throw std::invalid_argument(what + ".bucketMb must be >= 1");
  options.bucketBytes = static_cast<size_t>(bucketMb) << 20;
  options.agentStore = getBool(o, "agentStore", false, what);
  options.storePrefix = getOptionalString(o, "storePrefix", what).value_or("");
  return options;
}

std::vector<torch::Tensor> tensorsFromJs(const Napi::Value& value, const std::string& what) {
  if (!value.IsArray()) throw Napi::TypeError::New(value.Env(), what + " must be an array of Tensors");
  auto array = value.As<Napi::Array>();
  std::vector<torch::Tensor> out;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    out.push_back(TensorHandle::unwrap(array.Get(i), what + "[" + std::to_string(i) + "]"));
  }
  return out;
}

Napi::Value numbersToJs(Napi::Env env, const std::vector<double>& values) {
  Napi::Array out = Napi::Array::New(env, values.size());
  for (size_t i = 0; i < values.size(); ++i) out.Set(static_cast<uint32_t>(i), values[i]);
  return out;
}

class ProcessGroupHandle : public Napi::ObjectWrap<ProcessGroupHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "ProcessGroup",
                                      {
                                          StaticMethod<&ProcessGroupHandle::connect>("connect"),
                                          InstanceAccessor<&ProcessGroupHandle::rank>("rank"),
                                          InstanceAccessor<&ProcessGroupHandle::worldSize>("worldSize"),
                                          InstanceMethod<&ProcessGroupHandle::barrier>("barrier"),
                                          InstanceMethod<&ProcessGroupHandle::allReduceMean>("allReduceMean"),
                                          InstanceMethod<&ProcessGroupHandle::allReduceTensors>("allReduceTensors"),
                                          InstanceMethod<&ProcessGroupHandle::broadcastTensors>("broadcastTensors"),
                                          InstanceMethod<&ProcessGroupHandle::allGatherHash>("allGatherHash"),
                                      });
    addonData(env).constructors["ProcessGroup"] = Napi::Persistent(ctor);
    exports.Set("ProcessGroup", ctor);
  }

  explicit ProcessGroupHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessGroupHandle>(info) {}

  Group group_;

 private:
  // ProcessGroup.connect(options) -> Promise<ProcessGroup>: the rendezvous (blocks until all ranks join).
  static Napi::Value connect(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      dist::ProcessGroupOptions options = readOptions(requireObject(info[0], "processGroup options"));
      return PromiseWorker<Group>::run(
          env, "sdtune:processGroup.connect", [options]() { return dist::ProcessGroup::connect(options); },
          [](Napi::Env env, Group& group) -> Napi::Value {
            Napi::Object object = addonData(env).constructors["ProcessGroup"].New({});
            Unwrap(object)->group_ = group;
            return object;
          });
    });
  }

  Napi::Value rank(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), group_->rank()); }
  Napi::Value worldSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), group_->worldSize()); }

  Napi::Value barrier(const Napi::CallbackInfo& info) {
    Group group = group_;
    return PromiseWorker<bool>::run(
        info.Env(), "sdtune:processGroup.barrier",
        [group]() {
          group->barrier();
          return true;
        },
        [](Napi::Env env, bool&) { return env.Undefined(); });
  }

  // allReduceMean(numbers) -> Promise<number[]>: the mean over ranks of each value.
  Napi::Value allReduceMean(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      if (!info[0].IsArray()) throw Napi::TypeError::New(env, "allReduceMean takes an array of numbers");
      auto array = info[0].As<Napi::Array>();
      std::vector<double> values;
      for (uint32_t i = 0; i < array.Length(); ++i) {
        if (!array.Get(i).IsNumber()) throw Napi::TypeError::New(env, "allReduceMean takes an array of numbers");
        values.push_back(array.Get(i).As<Napi::Number>().DoubleValue());
      }
      Group group = group_;
      return PromiseWorker<std::vector<double>>::run(
          env, "sdtune:processGroup.allReduceMean", [group, values]() { return group->allReduceMeanValues(values); },
          [](Napi::Env env, std::vector<double>& out) { return numbersToJs(env, out); });
    });
  }

  // allReduceTensors(tensors) -> Promise<void>: each tensor, in place, becomes the mean over ranks.
  Napi::Value allReduceTensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto tensors = tensorsFromJs(info[0], "tensors");
      Group group = group_;
      return PromiseWorker<bool>::run(
          env, "sdtune:processGroup.allReduceTensors",
          [group, tensors]() {
            group->allReduceMean(tensors);
            return true;
          },
          [](Napi::Env env, bool&) { return env.Undefined(); });
    });
  }

  // broadcastTensors(tensors, root = 0) -> Promise<void>: in place, every rank gets root's values.
  Napi::Value broadcastTensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto tensors = tensorsFromJs(info[0], "tensors");
      int root = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
      Group group = group_;
      return PromiseWorker<bool>::run(
          env, "sdtune:processGroup.broadcastTensors",
          [group, tensors, root]() {
            group->broadcast(tensors, root);
            return true;
          },
          [](Napi::Env env, bool&) { return env.Undefined(); });
    });
  }

  // allGatherHash(tensors) -> Promise<number[]>: each rank's hash of its tensors (53-bit FNV-1a), in rank order.
  Napi::Value allGatherHash(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return guard(env, [&]() -> Napi::Value {
      auto tensors = tensorsFromJs(info[0], "tensors");
      Group group = group_;
      return PromiseWorker<std::vector<double>>::run(
          env, "sdtune:processGroup.allGatherHash",
          [group, tensors]() {
            std::vector<double> out;
            for (int64_t h : group->allGather(dist::hashTensors(tensors))) out.push_back(static_cast<double>(h));
            return out;
          },
          [](Napi::Env env, std::vector<double>& out) { return numbersToJs(env, out); });
    });
  }
};

}  // namespace

std::shared_ptr<dist::ProcessGroup> unwrapProcessGroup(const Napi::Value& value, const std::string& what) {
  Napi::Env env = value.Env();
  auto& ctor = addonData(env).constructors["ProcessGroup"];
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(ctor.Value())) {
    throw Napi::TypeError::New(env, what + " must be a ProcessGroup");
  }
  return ProcessGroupHandle::Unwrap(value.As<Napi::Object>())->group_;
}

SDTUNE_REGISTER_BINDING(processGroup, ProcessGroupHandle::init);

}  // namespace sdtune
