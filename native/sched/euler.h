// Euler's method on the probability-flow ODE in sigma space (Karras et al. 2022,
// Algorithm 2 without churn), as diffusers' EulerDiscreteScheduler. The ancestral
// variant (euler_ancestral.cc) shares the schedule and input scaling.
#pragma once

#include "sched/samplers.h"

namespace sdtune::sched {

class EulerSampler : public Sampler {
 public:
  EulerSampler(SamplerKind kind, const SchedulerConfig& config);

  // sqrt(max_sigma^2 + 1) for "leading" spacing, max_sigma otherwise (float32).
  float initNoiseSigma() const override;
  // sample / sqrt(sigma^2 + 1): the model sees unit-variance input.
  at::Tensor scaleModelInput(const at::Tensor& sample, int64_t index) const override;
  // x0 + sigma * noise (the Euler samplers work on unscaled samples).
  at::Tensor addNoise(const at::Tensor& x0, const at::Tensor& noise, int64_t index) const override;

 protected:
  void buildSchedule(int64_t steps) override;
  StepOutput stepAt(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                    c10::ArrayRef<at::Generator> generators) override;
  // x0 from the model output at sigma (epsilon: x - sigma * eps; v: the c_out/c_skip form).
  at::Tensor predictOriginal(const at::Tensor& modelOutput, float sigma, const at::Tensor& sample) const;
};

}  // namespace sdtune::sched
