#include "bindings/executor.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "bindings/common.h"

namespace sdtune {

namespace {

// One Node environment's side: where its finished jobs go back to its JS thread.
struct EnvJobs {
  napi_env env = nullptr;
  napi_threadsafe_function tsfn = nullptr;
  napi_async_context asyncContext = nullptr;
  bool closed = false;   // guarded by the executor mutex: the environment is being torn down
  size_t unsettled = 0;  // JS thread only: posted and not yet settled (the tsfn is ref'd while > 0)
};

struct Entry {
  std::shared_ptr<EnvJobs> owner;
  ExecutorJob* job;
};

// True when this thread allocates from glibc's main arena: its heap is the brk segment, below the
// program break; the other arenas' heaps are mmap'd far above it.
bool allocatesFromMainHeap() {
  void* p = std::malloc(64);
  const bool main = p != nullptr && reinterpret_cast<uintptr_t>(p) < reinterpret_cast<uintptr_t>(sbrk(0));
  std::free(p);
  return main;
}

// A candidate executor thread: it reports where its first allocation landed, then waits to be
// chosen (it runs the executor loop) or released (it exits).
struct Probe {
  std::mutex mutex;
  std::condition_variable cv;
  int onMainHeap = -1;  // -1 not known yet
  bool chosen = false;
  bool released = false;
};

// A fresh Node process holds about 5-9 arenas when the addon loads, and each probe takes the next
// one in the rotation: 16 goes round it (if mallopt came too late to apply, none would ever win).
constexpr int kMaxProbes = 16;

// Allocated once and never freed: no static destructor may join or tear down the thread
// at process exit (exit() may come while a job runs, as it could on libuv's pool).
class Executor {
 public:
  std::mutex mutex;
  std::condition_variable wake;      // a job was queued, or the thread should stop
  std::condition_variable finished;  // the running job finished
  std::deque<Entry> queue;
  EnvJobs* running = nullptr;  // whose job runs now
  std::thread thread;
  uint64_t generation = 0;  // bumped to stop the current thread (it exits even with jobs queued)
  int environments = 0;
  std::atomic<int> threads{0};  // wanted intra-op threads; 0 = leave as is
  std::atomic<uint64_t> jobsRun{0};
  std::atomic<int64_t> threadId{0};

  bool mainHeap = false;  // the executor thread allocates from glibc's main arena

  // glibc gives a thread its malloc arena at its first allocation. Node's threads exist before the
  // addon loads, so mallopt(M_ARENA_MAX, 1) (runtime.cc) only makes later threads share an existing
  // arena, taken round-robin. A secondary arena's heaps stop at 64 MB, so on one every larger block
  // (attention scores at 512 px, oneDNN's reordered convolution weights) is a fresh mmap, page-faulted
  // and zeroed on every step: a 7x slower LoRA step was measured on the fixture model at 96 px
  // (3.3-3.6 s vs 0.5 s with MALLOC_ARENA_MAX=1 set before start). So the executor is the first of a
  // few candidate threads whose first allocation lands in the main heap (each takes the next arena).
  void startLocked() {
    if (thread.joinable()) return;
    std::vector<std::pair<std::thread, std::shared_ptr<Probe>>> losers;
    for (int i = 0; i < kMaxProbes && !thread.joinable(); ++i) {
      auto probe = std::make_shared<Probe>();
      std::thread t([this, probe, mine = generation] {
        std::unique_lock<std::mutex> lock(probe->mutex);
        probe->onMainHeap = allocatesFromMainHeap() ? 1 : 0;
        probe->cv.notify_all();
        probe->cv.wait(lock, [&] { return probe->chosen || probe->released; });
        if (!probe->chosen) return;
        lock.unlock();
        loop(mine);
      });
      std::unique_lock<std::mutex> lock(probe->mutex);
      probe->cv.wait(lock, [&] { return probe->onMainHeap >= 0; });
      if (probe->onMainHeap == 1 || i == kMaxProbes - 1) {
        mainHeap = probe->onMainHeap == 1;
        probe->chosen = true;
        probe->cv.notify_all();
        thread = std::move(t);
      } else {
        losers.emplace_back(std::move(t), probe);  // kept alive so the next probe takes the next arena
      }
    }
    for (auto& [t, probe] : losers) {
      {
        std::lock_guard<std::mutex> lock(probe->mutex);
        probe->released = true;
      }
      probe->cv.notify_all();
      t.join();
    }
  }

 private:
  void loop(uint64_t mine) {
    threadId.store(static_cast<int64_t>(syscall(SYS_gettid)));
    int applied = -1;
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      wake.wait(lock, [&] { return generation != mine || !queue.empty(); });
      if (generation != mine) break;
      Entry entry = std::move(queue.front());
      queue.pop_front();
      running = entry.owner.get();
      lock.unlock();
      int wanted = threads.load();
      if (wanted > 0 && wanted != applied) {
        at::set_num_threads(wanted);
        applied = wanted;
      }
      entry.job->run();
      jobsRun.fetch_add(1);
      lock.lock();
      running = nullptr;
      // A torn-down environment's cleanup hook waits for this job and deletes it itself.
      if (!entry.owner->closed) {
        napi_status status = napi_call_threadsafe_function(entry.owner->tsfn, entry.job, napi_tsfn_nonblocking);
        (void)status;  // only fails when closing, which `closed` rules out; leaking then is the safe choice
      }
      finished.notify_all();
    }
  }
};

Executor& executor() {
  static Executor* instance = new Executor();
  return *instance;
}

// On the JS thread: settle the job inside a callback scope (so promise reactions run), then delete it.
// env is null when the environment is being torn down with the job still queued here.
void deliver(napi_env env, napi_value, void* context, void* data) {
  auto* job = static_cast<ExecutorJob*>(data);
  auto* owner = static_cast<std::shared_ptr<EnvJobs>*>(context)->get();
  if (env == nullptr) {
    delete job;
    return;
  }
  if (--owner->unsettled == 0) napi_unref_threadsafe_function(env, owner->tsfn);
  {
    Napi::HandleScope scope(env);
    napi_callback_scope callbackScope = nullptr;
    napi_value resource = Napi::Object::New(env);
    bool scoped = napi_open_callback_scope(env, resource, owner->asyncContext, &callbackScope) == napi_ok;
    try {
      job->settle(Napi::Env(env));
    } catch (...) {
      // settle() turns every failure into a rejection; nothing may unwind into Node.
    }
    if (scoped) napi_close_callback_scope(env, callbackScope);
  }
  delete job;
}

// The environment's cleanup hook (JS thread): drop its queued jobs, wait for its running one.
void closeEnvironment(const std::shared_ptr<EnvJobs>& owner) {
  Executor& ex = executor();
  std::deque<ExecutorJob*> dropped;
  std::thread toJoin;
  {
    std::unique_lock<std::mutex> lock(ex.mutex);
    owner->closed = true;
    for (auto it = ex.queue.begin(); it != ex.queue.end();) {
      if (it->owner == owner) {
        dropped.push_back(it->job);
        it = ex.queue.erase(it);
      } else {
        ++it;
      }
    }
    ex.finished.wait(lock, [&] { return ex.running != owner.get(); });
    if (--ex.environments == 0 && ex.thread.joinable()) {
      ++ex.generation;
      ex.wake.notify_all();
      toJoin = std::move(ex.thread);
    }
  }
  if (toJoin.joinable()) toJoin.join();
  for (ExecutorJob* job : dropped) delete job;
  napi_async_destroy(owner->env, owner->asyncContext);
}

void initExecutor(Napi::Env env, Napi::Object) {
  auto owner = std::make_shared<EnvJobs>();
  owner->env = env;
  auto* context = new std::shared_ptr<EnvJobs>(owner);
  Napi::String name = Napi::String::New(env, "sdtune:executor");
  NAPI_THROW_IF_FAILED_VOID(env, napi_async_init(env, nullptr, name, &owner->asyncContext));
  NAPI_THROW_IF_FAILED_VOID(
      env, napi_create_threadsafe_function(
               env, nullptr, nullptr, name, 0, 1, context,
               [](napi_env, void*, void* hint) { delete static_cast<std::shared_ptr<EnvJobs>*>(hint); }, context,
               deliver, &owner->tsfn));
  napi_unref_threadsafe_function(env, owner->tsfn);  // ref'd only while jobs are out
  {
    std::lock_guard<std::mutex> lock(executor().mutex);
    ++executor().environments;
  }
  addonData(env).jobs = owner;
  // Registered after the thread-safe function, so it runs before Node tears that down.
  env.AddCleanupHook([owner] { closeEnvironment(owner); });
}

}  // namespace

void postJob(Napi::Env env, ExecutorJob* job) {
  auto owner = std::static_pointer_cast<EnvJobs>(addonData(env).jobs);
  if (owner->unsettled++ == 0) napi_ref_threadsafe_function(env, owner->tsfn);
  Executor& ex = executor();
  {
    std::lock_guard<std::mutex> lock(ex.mutex);
    ex.startLocked();
    ex.queue.push_back({owner, job});
  }
  ex.wake.notify_one();
}

void setExecutorThreads(int threads) {
  executor().threads.store(threads);
}

ExecutorStats executorStats() {
  Executor& ex = executor();
  ExecutorStats s;
  {
    std::lock_guard<std::mutex> lock(ex.mutex);
    s.started = ex.thread.joinable();
    s.mainHeap = ex.mainHeap;
  }
  s.jobsRun = ex.jobsRun.load();
  s.threadId = ex.threadId.load();
  return s;
}

SDTUNE_REGISTER_BINDING(executor, initExecutor);

}  // namespace sdtune
