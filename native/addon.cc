// Module init only: every bindings/*.cc registers itself; here they all run.
#include <napi.h>

#include <thread>

#include "bindings/common.h"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  auto* data = new sdtune::AddonData();
  data->jsThread = std::this_thread::get_id();
  env.SetInstanceData(data);
  for (const auto& [name, initBinding] : sdtune::registeredBindings()) {
    try {
      initBinding(env, exports);
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, std::string("sdtune: initialising binding ") + name + " failed: " + e.what());
    }
  }
  return exports;
}

}  // namespace

NODE_API_MODULE(sdtune, init)
