// Promise-returning work off the JS thread. The Error object is created on the
// JS thread when the call is made, so a failure carries the caller's JS stack.
#pragma once

#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "bindings/common.h"

namespace sdtune {

// Set from JS (AbortSignal -> token.cancel()), polled by long native loops.
class CancelToken {
 public:
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  // Throws Cancelled when set; call between steps.
  void check() const;

 private:
  std::atomic<bool> cancelled_{false};
};

struct Cancelled : std::runtime_error {
  Cancelled() : std::runtime_error("cancelled") {}
};

// Reads an optional CancelToken handle from a JS value (undefined -> none).
std::shared_ptr<CancelToken> toCancelToken(const Napi::Value& value);

template <typename Result>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result()>;
  using Convert = std::function<Napi::Value(Napi::Env, Result&)>;

  // Queues `work` on the libuv pool; `convert` turns its result into JS on the JS thread.
  static Napi::Promise run(Napi::Env env, const char* name, Work work, Convert convert) {
    auto* worker = new PromiseWorker(env, name, std::move(work), std::move(convert));
    auto promise = worker->deferred_.Promise();
    worker->Queue();
    return promise;
  }

 protected:
  void Execute() override {
    try {
      result_ = work_();
    } catch (const Cancelled&) {
      cancelled_ = true;
      SetError("cancelled");
    } catch (...) {
      SetError(describeException(std::current_exception()));
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(convert_(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (...) {
      reject(describeException(std::current_exception()));
    }
  }

  void OnError(const Napi::Error& e) override { reject(e.Message()); }

 private:
  PromiseWorker(Napi::Env env, const char* name, Work work, Convert convert)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        convert_(std::move(convert)) {
    callerError_ = Napi::Persistent(Napi::Error::New(env, "").Value());
  }

  // Reuses the Error captured at call time: its stack is the caller's.
  void reject(const std::string& message) {
    Napi::Env env = Env();
    Napi::Object error = callerError_.Value();
    std::string stack = error.Get("stack").IsString() ? error.Get("stack").As<Napi::String>().Utf8Value() : "";
    auto firstBreak = stack.find('\n');
    std::string frames = firstBreak == std::string::npos ? "" : stack.substr(firstBreak);
    error.Set("message", Napi::String::New(env, message));
    error.Set("stack", Napi::String::New(env, "Error: " + message + frames));
    if (cancelled_) {
      error.Set("name", Napi::String::New(env, "AbortError"));
      error.Set("code", Napi::String::New(env, "ABORT_ERR"));
    }
    deferred_.Reject(error);
  }

  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference callerError_;
  Work work_;
  Convert convert_;
  Result result_{};
  bool cancelled_ = false;
};

}  // namespace sdtune
