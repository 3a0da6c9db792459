// One long-lived native thread runs every libtorch job of the addon (model loads,
// forwards, training steps, generation), in FIFO order. Why one thread: libtorch's
// OpenMP team and glibc's malloc arena belong to the calling thread, so jobs spread
// over libuv's pool threads would keep up to four of each (more memory, cold caches,
// slower first steps). One executor serves the whole process, every worker_threads
// environment included: a long job of one environment delays the others' jobs.
//
// A job is posted from an environment's JS thread; run() happens on the executor,
// settle() back on that JS thread (through one thread-safe function per environment).
// When an environment is torn down, its queued jobs are dropped, a running one is
// waited for, and nothing is delivered to it any more; the thread stops when the last
// environment goes.
#pragma once

#include <napi.h>

#include <cstdint>

namespace sdtune {

class ExecutorJob {
 public:
  virtual ~ExecutorJob() = default;
  // On the executor thread; must not throw (record the error for settle()).
  virtual void run() = 0;
  // On the posting environment's JS thread, inside a callback scope, after run().
  virtual void settle(Napi::Env env) = 0;
};

// Queues `job` from the JS thread of `env`; the executor owns it from now on and
// deletes it on that JS thread (after settle(), or unsettled when the environment goes).
void postJob(Napi::Env env, ExecutorJob* job);

// The intra-op thread count the executor applies before its next job (at::set_num_threads
// acts per calling thread under OpenMP, so setting it on the JS thread alone is not enough).
void setExecutorThreads(int threads);

struct ExecutorStats {
  bool started = false;   // the thread exists
  uint64_t jobsRun = 0;   // jobs run since the process started
  int64_t threadId = 0;   // the executor's kernel thread id (0 before it starts)
  bool mainHeap = false;  // it allocates from glibc's main arena (see executor.cc)
};
ExecutorStats executorStats();

}  // namespace sdtune
