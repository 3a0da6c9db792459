// Process-wide runtime settings made at load (threads, malloc) and `info()`.
#include <dlfcn.h>
#include <link.h>
#include <malloc.h>
#include <sched.h>
#include <stdlib.h>

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "bindings/executor.h"
#include "nn/parallel_mm.h"

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

// Big tensors come and go every step: activations, and oneDNN's reordered copy of every
// convolution weight (59-118 MB each on SD-2's 1280-channel layers, made on each call).
// glibc hands a block over the mmap threshold a fresh mmap, and the process page-faults
// through it on every call: 117 ms to reorder a 59 MB weight instead of 3 ms. Raising the
// threshold is not enough: the executor thread gets a secondary arena, whose heaps cannot
// hold a block over 64 MB, so those are mmapped whatever the threshold. One arena (the main
// one, which grows with brk and keeps freed blocks for the next step) serves every thread;
// the libtorch work is on one thread anyway. Measured on SD-2-base's UNet, LoRA step at
// 32x32 latents on 2 cores: 7.95 s -> 3.5 s, peak RSS 4.51 -> 4.44 GB (benchmarks/peer.ts).
// Set before the executor thread's first allocation. glibc's own variables (MALLOC_ARENA_MAX,
// MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), read at process start, win.
std::vector<std::string> mallocNotes;  // what tuneMalloc did, for info()

void setMalloc(int param, const char* name, const char* env, int value) {
  if (const char* given = std::getenv(env); given && *given) {
    mallocNotes.push_back(std::string(env) + "=" + given + " (left as set)");
  } else if (mallopt(param, value) == 1) {
    mallocNotes.push_back(std::string(name) + "=" + std::to_string(value));
  } else {
    mallocNotes.push_back(std::string(name) + " refused by this C library");
  }
}

void tuneMalloc() {
  setMalloc(M_ARENA_MAX, "M_ARENA_MAX", "MALLOC_ARENA_MAX", 1);
  setMalloc(M_MMAP_THRESHOLD, "M_MMAP_THRESHOLD", "MALLOC_MMAP_THRESHOLD_", 1 << 30);
  setMalloc(M_TRIM_THRESHOLD, "M_TRIM_THRESHOLD", "MALLOC_TRIM_THRESHOLD_", 1 << 30);
}

// libtorch starts with one intra-op thread here; use the cores we may run on, unless
// SDTUNE_NUM_THREADS or OMP_NUM_THREADS says otherwise (torchrun and `--nproc-per-node` set the
// latter to cores / processes: N ranks of all the cores each fought over them). The executor
// thread applies the same count to itself (OpenMP keeps it per thread).
void configureThreads() {
  int threads = availableCores();
  for (const char* name : {"SDTUNE_NUM_THREADS", "OMP_NUM_THREADS"}) {
    const char* env = std::getenv(name);
    if (env && std::atoi(env) > 0) {
      threads = std::atoi(env);
      break;
    }
  }
  at::set_num_threads(threads);
  setExecutorThreads(threads);
}

// What was done to OpenBLAS's own thread pool at load, for info().
struct BlasThreads {
  bool found = false;  // openblas_set_num_threads resolved in this process
  int set = 0;         // the count sdtune set (0: left alone)
  std::string reason;  // why (or why not)
};
BlasThreads blasThreads;

// OpenBLAS (pthread build) keeps its own pool beside libtorch's OpenMP team; its idle
// workers spin in sched_yield while OpenMP computes, and both fight over the same cores.
// One BLAS thread per call leaves the parallelism to OpenMP. Looked up with dlsym, so
// a libtorch on MKL or another BLAS is left untouched. OPENBLAS_NUM_THREADS wins if set.
void limitOpenBlasOnce() {
  using SetThreads = void (*)(int);
  auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  blasThreads.found = set != nullptr;
  if (!set) {
    blasThreads.reason = "OpenBLAS not loaded";
    return;
  }
  if (const char* env = std::getenv("OPENBLAS_NUM_THREADS"); env && *env) {
    blasThreads.reason = std::string("OPENBLAS_NUM_THREADS=") + env + " (left as set)";
    return;
  }
  set(1);
  blasThreads.set = 1;
  blasThreads.reason = "set to 1 at load (OpenMP does the parallel work)";
}

void limitOpenBlas() {
  static std::once_flag once;  // every worker_threads environment runs initRuntime
  std::call_once(once, limitOpenBlasOnce);
}

// Current OpenBLAS thread count, or 0 when OpenBLAS is not loaded.
int openBlasThreads() {
  using GetThreads = int (*)();
  auto get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return get ? get() : 0;
}

Napi::Object blasAndExecutorInfo(Napi::Env env, Napi::Object out) {
  Napi::Object blas = Napi::Object::New(env);
  blas.Set("openblas", blasThreads.found);
  blas.Set("threads", openBlasThreads());
  blas.Set("setBySdtune", blasThreads.set);
  blas.Set("note", blasThreads.reason);
  out.Set("blasThreads", blas);
  ExecutorStats stats = executorStats();
  Napi::Object executor = Napi::Object::New(env);
  executor.Set("started", stats.started);
  executor.Set("jobsRun", Napi::Number::New(env, static_cast<double>(stats.jobsRun)));
  executor.Set("threadId", Napi::Number::New(env, static_cast<double>(stats.threadId)));
  executor.Set("mainHeap", stats.mainHeap);
  out.Set("executor", executor);
  return out;
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
  blasAndExecutorInfo(env, out);
  // sdtune's own CPU kernels (nn/parallel_mm.h, nn/attention_cpu.h): their switches, and how many
  // threads their parallel loops really get (1 on a build without OpenMP).
  Napi::Object kernels = Napi::Object::New(env);
  kernels.Set("splitProducts", nn::kernelSwitchOn("SDTUNE_PARALLEL_GEMM"));
  kernels.Set("blockedAttention", nn::kernelSwitchOn("SDTUNE_BLOCKED_ATTENTION"));
  kernels.Set("parallelForThreads", static_cast<double>(nn::parallelForThreads()));
  out.Set("cpuKernels", kernels);
  auto notes = Napi::Array::New(env);
  for (size_t i = 0; i < mallocNotes.size(); ++i) notes.Set(static_cast<uint32_t>(i), mallocNotes[i]);
  out.Set("malloc", notes);
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
    setExecutorThreads(call[0].As<Napi::Number>().Int32Value());
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
  limitOpenBlas();
  exports.Set("info", Napi::Function::New(env, info));
  exports.Set("setNumThreads", Napi::Function::New(env, setNumThreads));
  exports.Set("manualSeed", Napi::Function::New(env, manualSeed));
}

}  // namespace

SDTUNE_REGISTER_BINDING(runtime, initRuntime);

}  // namespace sdtune
