// Process-wide runtime settings made at load (threads, malloc) and `info()`.
#include <link.h>
#include <malloc.h>
#include <sched.h>
#include <stdlib.h>

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <cstring>
#include <string>
#include <vector>

#include "bindings/common.h"

#ifdef SDTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace sdtune {

namespace {

int availableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

// Big tensors come and go every step; without this glibc hands each one a fresh
// mmap and the process page-faults on every allocation.
void tuneMalloc() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

// libtorch starts with one intra-op thread here; use the cores we may run on.
void configureThreads() {
  int threads = availableCores();
  if (const char* env = std::getenv("SDTUNE_NUM_THREADS")) {
    int requested = std::atoi(env);
    if (requested > 0) threads = requested;
  }
  at::set_num_threads(threads);
}

// The shared libraries loaded into this process whose names mention a BLAS.
std::vector<std::string> loadedBlasLibraries() {
  std::vector<std::string> found;
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) {
        auto* out = static_cast<std::vector<std::string>*>(data);
        std::string name = info->dlpi_name ? info->dlpi_name : "";
        if (name.find("blas") != std::string::npos || name.find("mkl") != std::string::npos ||
            name.find("lapack") != std::string::npos) {
          char resolved[PATH_MAX];
          out->push_back(realpath(name.c_str(), resolved) ? std::string(resolved) : name);
        }
        return 0;
      },
      &found);
  return found;
}

Napi::Value infoUnguarded(const Napi::CallbackInfo& call) {
  Napi::Env env = call.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("libtorchVersion", TORCH_VERSION);
  out.Set("torchSource", SDTUNE_TORCH_SOURCE);
  out.Set("threads", at::get_num_threads());
  out.Set("interopThreads", at::get_num_interop_threads());
  out.Set("cores", availableCores());
  auto blas = Napi::Array::New(env);
  auto libs = loadedBlasLibraries();
  for (size_t i = 0; i < libs.size(); ++i) blas.Set(static_cast<uint32_t>(i), libs[i]);
  out.Set("blasLibraries", blas);
  out.Set("parallelInfo", at::get_parallel_info());
  out.Set("buildConfig", at::show_config());
  Napi::Object cuda = Napi::Object::New(env);
#ifdef SDTUNE_WITH_CUDA
  cuda.Set("built", true);
  bool available = torch::cuda::is_available();
  cuda.Set("available", available);
  auto devices = Napi::Array::New(env);
  if (available) {
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i) {
      const cudaDeviceProp* prop = at::cuda::getDeviceProperties(i);
      Napi::Object d = Napi::Object::New(env);
      d.Set("index", static_cast<double>(i));
      d.Set("name", prop->name);
      d.Set("capability", std::to_string(prop->major) + "." + std::to_string(prop->minor));
      d.Set("memoryBytes", static_cast<double>(prop->totalGlobalMem));
      devices.Set(static_cast<uint32_t>(i), d);
    }
  }
  cuda.Set("devices", devices);
#else
  cuda.Set("built", false);
  cuda.Set("available", false);
  cuda.Set("devices", Napi::Array::New(env));
#endif
  out.Set("cuda", cuda);
  return out;
}

Napi::Value info(const Napi::CallbackInfo& call) {
  Napi::Env env = call.Env();
  return guard(env, [&] { return infoUnguarded(call); });
}

Napi::Value setNumThreads(const Napi::CallbackInfo& call) {
  Napi::Env env = call.Env();
  if (!call[0].IsNumber() || call[0].As<Napi::Number>().Int32Value() < 1) {
    throw Napi::RangeError::New(env, "threads must be a positive integer");
  }
  return guard(env, [&] {
    at::set_num_threads(call[0].As<Napi::Number>().Int32Value());
    return Napi::Number::New(env, at::get_num_threads());
  });
}

Napi::Value manualSeed(const Napi::CallbackInfo& call) {
  Napi::Env env = call.Env();
  if (!call[0].IsNumber()) throw Napi::TypeError::New(env, "seed must be a number");
  return guard(env, [&] {
    torch::manual_seed(static_cast<uint64_t>(call[0].As<Napi::Number>().Int64Value()));
    return env.Undefined();
  });
}

void initRuntime(Napi::Env env, Napi::Object exports) {
  tuneMalloc();
  configureThreads();
  exports.Set("info", Napi::Function::New(env, info));
  exports.Set("setNumThreads", Napi::Function::New(env, setNumThreads));
  exports.Set("manualSeed", Napi::Function::New(env, manualSeed));
}

}  // namespace

SDTUNE_REGISTER_BINDING(runtime, initRuntime);

}  // namespace sdtune
