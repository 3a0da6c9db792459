// Promise-returning work off the JS thread, on the one executor thread. The Error object
// is created on the JS thread when the call is made, so a failure carries the caller's JS stack.
#pragma once

#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "bindings/common.h"
#include "bindings/executor.h"

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

// A Promise for `work`, run on the executor thread (bindings/executor.h) in FIFO order
// with every other native job; `convert` turns its result into JS on the JS thread.
template <typename Result>
class PromiseWorker : public ExecutorJob {
 public:
  using Work = std::function<Result()>;
  using Convert = std::function<Napi::Value(Napi::Env, Result&)>;

  // `name` labels the job (kept for diagnostics, as libuv's async resource name was).
  static Napi::Promise run(Napi::Env env, const char* name, Work work, Convert convert) {
    auto* worker = new PromiseWorker(env, name, std::move(work), std::move(convert));
    auto promise = worker->deferred_.Promise();
    postJob(env, worker);
    return promise;
  }

  void run() override {
    try {
      result_ = work_();
    } catch (const Cancelled&) {
      cancelled_ = true;
      error_ = "cancelled";
      failed_ = true;
    } catch (...) {
      error_ = describeException(std::current_exception());
      failed_ = true;
    }
  }

  void settle(Napi::Env env) override {
    if (failed_) return reject(env, error_);
    try {
      deferred_.Resolve(convert_(env, result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (...) {
      reject(env, describeException(std::current_exception()));
    }
  }

 private:
  PromiseWorker(Napi::Env env, const char* name, Work work, Convert convert)
      : name_(name),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        convert_(std::move(convert)) {
    callerError_ = Napi::Persistent(Napi::Error::New(env, "").Value());
  }

  // Reuses the Error captured at call time: its stack is the caller's.
  void reject(Napi::Env env, const std::string& message) {
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

  const char* name_;
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference callerError_;
  Work work_;
  Convert convert_;
  Result result_{};
  std::string error_;
  bool failed_ = false;
  bool cancelled_ = false;
};

}  // namespace sdtune
