// Euler ancestral (k-diffusion's sample_euler_ancestral, diffusers
// EulerAncestralDiscreteScheduler): an Euler step down to sigma_down, then fresh
// noise of scale sigma_up, so sigma_down^2 + sigma_up^2 = sigma_next^2. One randn
// draw per step, including the last one (where sigma_up = 0).
#include <cmath>

#include "sched/euler.h"

namespace sdtune::sched {

namespace {

class EulerAncestralSampler : public EulerSampler {
 public:
  explicit EulerAncestralSampler(const SchedulerConfig& config) : EulerSampler(SamplerKind::EulerAncestral, config) {}

 protected:
  StepOutput stepAt(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                    c10::ArrayRef<at::Generator> generators) override {
    at::Tensor x = sample.to(at::kFloat);
    const float sigma = sigmaAt(index);
    at::Tensor x0 = predictOriginal(modelOutput, sigma, x);

    const float sigmaTo = sigmaAt(index + 1);
    const float sigmaUp = std::sqrt(sigmaTo * sigmaTo * (sigma * sigma - sigmaTo * sigmaTo) / (sigma * sigma));
    const float sigmaDown = std::sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);

    at::Tensor derivative = (x - x0) / sigma;
    at::Tensor prev = x + derivative * (sigmaDown - sigma);
    StepOutput out;
    out.noise = randnTensor(modelOutput.sizes(), modelOutput.options(), generators);
    out.prevSample = (prev + out.noise * sigmaUp).to(modelOutput.scalar_type());
    out.predOriginalSample = x0;
    return out;
  }
};

}  // namespace

std::unique_ptr<Sampler> makeEulerAncestral(const SchedulerConfig& config) {
  return std::make_unique<EulerAncestralSampler>(config);
}

}  // namespace sdtune::sched
