// Internal to native/sched: the concrete samplers' constructors and the helpers
// they share. Other code uses sampler.h / config.h.
#pragma once

#include <memory>
#include <vector>

#include "sched/numpy_compat.h"
#include "sched/sampler.h"

namespace sdtune::sched {

std::unique_ptr<Sampler> makeDdpm(const SchedulerConfig& config);
std::unique_ptr<Sampler> makeDdim(const SchedulerConfig& config);
std::unique_ptr<Sampler> makePndm(const SchedulerConfig& config);
std::unique_ptr<Sampler> makeEuler(const SchedulerConfig& config);
std::unique_ptr<Sampler> makeEulerAncestral(const SchedulerConfig& config);
std::unique_ptr<Sampler> makeDpmSolver(const SchedulerConfig& config);

// The "linspace" / "leading" / "trailing" timesteps of DDPM, DDIM, PNDM and Euler, descending.
// roundLinspace: DDPM/DDIM/PNDM round linspace values to integers; Euler keeps them as float32.
std::vector<double> spacedTimesteps(const SchedulerConfig& config, int64_t steps, bool roundLinspace);

// diffusers' _threshold_sample (dynamic thresholding, Imagen): per-sample quantile clamp.
at::Tensor thresholdSample(const at::Tensor& sample, double ratio, double maxValue);

// log / exp of a float through ATen's kernels (vectorized, within an ulp of libm): diffusers
// computes such scalars as 0-dim float32 tensors, and single ulps add up over a run.
float scalarLog(float x);
float scalarExp(float x);

// An error about a config field's value: names the field and the supported values.
[[noreturn]] void unsupported(const char* sampler, const char* field, const std::string& value,
                              const std::string& supported);

}  // namespace sdtune::sched
