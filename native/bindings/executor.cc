#include "bindings/executor.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <ATen/Parallel.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

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

  void startLocked() {
    if (thread.joinable()) return;
    thread = std::thread([this, mine = generation] { loop(mine); });
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
  }
  s.jobsRun = ex.jobsRun.load();
  s.threadId = ex.threadId.load();
  return s;
}

SDTUNE_REGISTER_BINDING(executor, initExecutor);

}  // namespace sdtune
