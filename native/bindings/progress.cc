#include "bindings/progress.h"

#include <stdexcept>

namespace sdtune {

std::shared_ptr<ProgressSink> ProgressSink::fromJs(Napi::Env env, const Napi::Value& callback,
                                                   const std::string& what) {
  if (callback.IsUndefined() || callback.IsNull()) return nullptr;
  if (!callback.IsFunction()) throw std::invalid_argument(what + " must be a function");
  auto sink = std::make_shared<ProgressSink>();
  // Queue of 64: a slow JS consumer loses intermediate reports, never the worker's time.
  sink->tsfn_ = Napi::ThreadSafeFunction::New(env, callback.As<Napi::Function>(), "sdtune:progress", 64, 1);
  sink->tsfn_.Unref(env);  // progress alone never keeps the process alive
  return sink;
}

ProgressSink::~ProgressSink() {
  if (tsfn_) tsfn_.Release();
}

void ProgressSink::report(const ProgressEvent& event) {
  auto* copy = new ProgressEvent(event);
  napi_status status = tsfn_.NonBlockingCall(copy, [](Napi::Env env, Napi::Function fn, ProgressEvent* e) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("phase", e->phase);
    o.Set("step", Napi::Number::New(env, static_cast<double>(e->step)));
    o.Set("total", Napi::Number::New(env, static_cast<double>(e->total)));
    for (const auto& [k, v] : e->values) o.Set(k, Napi::Number::New(env, v));
    delete e;
    // An exception in a user's progress callback must not take the process down.
    try {
      fn.Call({o});
    } catch (const Napi::Error&) {
    }
  });
  if (status != napi_ok) delete copy;
}

}  // namespace sdtune
