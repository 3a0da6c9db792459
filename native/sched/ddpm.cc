// DDPM ancestral sampling (diffusers DDPMScheduler.step): the posterior mean
// q(x_{t-1} | x_t, x0) plus fixed variance noise, one randn draw per step with t > 0.
#include <cmath>

#include "sched/samplers.h"

namespace sdtune::sched {

namespace {

class DdpmSampler : public Sampler {
 public:
  explicit DdpmSampler(const SchedulerConfig& config) : Sampler(SamplerKind::DDPM, config) {
    const std::string variance = config_.variance_type.value_or("null");
    if (variance != "fixed_small" && variance != "fixed_small_log" && variance != "fixed_large") {
      unsupported("ddpm", "variance_type", variance, "fixed_small, fixed_small_log, fixed_large");
    }
  }

 protected:
  void buildSchedule(int64_t steps) override {
    std::vector<int64_t> values;
    for (double t : spacedTimesteps(config_, steps, /*roundLinspace=*/true)) values.push_back(static_cast<int64_t>(t));
    timesteps_ = torch::tensor(values, at::kLong);  // [steps]
  }

  StepOutput stepAt(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                    c10::ArrayRef<at::Generator> generators) override {
    const int64_t t = intTimestepAt(index);
    const int64_t prevT = t - config_.num_train_timesteps / numInferenceSteps_;
    // Scalars in float32, as diffusers' 0-dim tensor arithmetic.
    const float alphaProd = alphaCumprod(t);
    const float alphaProdPrev = prevT >= 0 ? alphaCumprod(prevT) : 1.0f;
    const float betaProd = 1.0f - alphaProd;
    const float betaProdPrev = 1.0f - alphaProdPrev;
    const float currentAlpha = alphaProd / alphaProdPrev;
    const float currentBeta = 1.0f - currentAlpha;

    at::Tensor x0;
    switch (config_.prediction_type) {
      case PredictionType::Epsilon: x0 = (sample - std::sqrt(betaProd) * modelOutput) / std::sqrt(alphaProd); break;
      case PredictionType::Sample: x0 = modelOutput; break;
      case PredictionType::VPrediction: x0 = std::sqrt(alphaProd) * sample - std::sqrt(betaProd) * modelOutput; break;
    }
    x0 = clipOrThreshold(x0);

    // Posterior mean coefficients (formula 7 of the DDPM paper).
    const float x0Coeff = (std::sqrt(alphaProdPrev) * currentBeta) / betaProd;
    const float sampleCoeff = std::sqrt(currentAlpha) * betaProdPrev / betaProd;
    at::Tensor prev = x0Coeff * x0 + sampleCoeff * sample;

    StepOutput out;
    if (t > 0) {
      out.noise = randnTensor(modelOutput.sizes(), modelOutput.options(), generators);
      prev = prev + varianceScale(alphaProd, alphaProdPrev, currentBeta) * out.noise;
    }
    out.prevSample = prev;
    out.predOriginalSample = x0;
    return out;
  }

 private:
  // The factor on the unit noise: sqrt(variance), or exp(0.5 log variance) for fixed_small_log.
  float varianceScale(float alphaProd, float alphaProdPrev, float currentBeta) const {
    float variance = (1.0f - alphaProdPrev) / (1.0f - alphaProd) * currentBeta;
    variance = std::max(variance, 1e-20f);  // keeps the log finite at t = 0
    const std::string& type = *config_.variance_type;
    if (type == "fixed_small_log") return scalarExp(0.5f * scalarLog(variance));
    if (type == "fixed_large") return std::sqrt(currentBeta);
    return std::sqrt(variance);
  }
};

}  // namespace

std::unique_ptr<Sampler> makeDdpm(const SchedulerConfig& config) {
  return std::make_unique<DdpmSampler>(config);
}

}  // namespace sdtune::sched
