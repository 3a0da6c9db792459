// CancelToken: the native half of an AbortSignal. TypeScript calls cancel() on
// abort; native loops poll it between steps and stop with an AbortError.
#include <napi.h>

#include "bindings/async.h"
#include "bindings/common.h"

namespace sdtune {

namespace {

class CancelTokenHandle : public Napi::ObjectWrap<CancelTokenHandle> {
 public:
  static void init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "CancelToken",
                                      {
                                          InstanceMethod<&CancelTokenHandle::cancel>("cancel"),
                                          InstanceAccessor<&CancelTokenHandle::cancelled>("cancelled"),
                                      });
    addonData(env).constructors["CancelToken"] = Napi::Persistent(ctor);
    exports.Set("CancelToken", ctor);
  }

  explicit CancelTokenHandle(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<CancelTokenHandle>(info), token_(std::make_shared<CancelToken>()) {}

  std::shared_ptr<CancelToken> token() const { return token_; }

 private:
  void cancel(const Napi::CallbackInfo&) { token_->cancel(); }
  Napi::Value cancelled(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), token_->cancelled()); }

  std::shared_ptr<CancelToken> token_;
};

}  // namespace

void CancelToken::check() const {
  if (cancelled()) throw Cancelled();
}

std::shared_ptr<CancelToken> toCancelToken(const Napi::Value& value) {
  if (value.IsUndefined() || value.IsNull()) return nullptr;
  Napi::Env env = value.Env();
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(addonData(env).constructors["CancelToken"].Value())) {
    throw Napi::TypeError::New(env, "cancel must be a CancelToken");
  }
  return Napi::ObjectWrap<CancelTokenHandle>::Unwrap(value.As<Napi::Object>())->token();
}

SDTUNE_REGISTER_BINDING(cancel_token, CancelTokenHandle::init);

}  // namespace sdtune
