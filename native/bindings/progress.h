// Progress from native loops to a JS callback, through a thread-safe function.
// Reports are dropped rather than queued without bound when JS is busy.
#pragma once

#include <napi.h>

#include <map>
#include <memory>
#include <string>

namespace sdtune {

struct ProgressEvent {
  std::string phase;  // "denoise", "decode", "train", ...
  int64_t step = 0;
  int64_t total = 0;
  std::map<std::string, double> values;
};

class ProgressSink {
 public:
  // nullptr when `callback` is undefined or null.
  static std::shared_ptr<ProgressSink> fromJs(Napi::Env env, const Napi::Value& callback, const std::string& what);
  ~ProgressSink();
  // Callable from any thread; never blocks.
  void report(const ProgressEvent& event);

 private:
  Napi::ThreadSafeFunction tsfn_;
};

}  // namespace sdtune
