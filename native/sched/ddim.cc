// DDIM (diffusers DDIMScheduler.step, formula 12 of arXiv 2010.02502): deterministic
// for eta = 0; eta > 0 adds sigma_t-scaled noise (one randn draw per step).
#include <cmath>

#include "sched/samplers.h"

namespace sdtune::sched {

namespace {

class DdimSampler : public Sampler {
 public:
  explicit DdimSampler(const SchedulerConfig& config) : Sampler(SamplerKind::DDIM, config) {
    if (config_.eta < 0) unsupported("ddim", "eta", std::to_string(config_.eta), "eta >= 0");
    // set_alpha_to_one=false: the last step goes to alphas_cumprod[0] instead of 1.
    finalAlphaCumprod_ = config_.set_alpha_to_one ? 1.0f : alphaCumprod(0);
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
    // diffusers steps back by train // steps whatever the spacing.
    const int64_t prevT = t - config_.num_train_timesteps / numInferenceSteps_;
    const float alphaProd = alphaCumprod(t);
    const float alphaProdPrev = prevT >= 0 ? alphaCumprod(prevT) : finalAlphaCumprod_;
    const float betaProd = 1.0f - alphaProd;

    at::Tensor x0, eps;
    switch (config_.prediction_type) {
      case PredictionType::Epsilon:
        x0 = (sample - std::sqrt(betaProd) * modelOutput) / std::sqrt(alphaProd);
        eps = modelOutput;
        break;
      case PredictionType::Sample:
        x0 = modelOutput;
        eps = (sample - std::sqrt(alphaProd) * x0) / std::sqrt(betaProd);
        break;
      case PredictionType::VPrediction:
        x0 = std::sqrt(alphaProd) * sample - std::sqrt(betaProd) * modelOutput;
        eps = std::sqrt(alphaProd) * modelOutput + std::sqrt(betaProd) * sample;
        break;
    }
    x0 = clipOrThreshold(x0);

    // sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).
    const float betaProdPrev = 1.0f - alphaProdPrev;
    const float variance = (betaProdPrev / betaProd) * (1.0f - alphaProd / alphaProdPrev);
    const float stdDev = static_cast<float>(config_.eta) * std::sqrt(variance);

    at::Tensor direction = std::sqrt(1.0f - alphaProdPrev - stdDev * stdDev) * eps;  // "direction pointing to x_t"
    at::Tensor prev = std::sqrt(alphaProdPrev) * x0 + direction;

    StepOutput out;
    if (config_.eta > 0) {
      out.noise = randnTensor(modelOutput.sizes(), modelOutput.options(), generators);
      prev = prev + stdDev * out.noise;
    }
    out.prevSample = prev;
    out.predOriginalSample = x0;
    return out;
  }

 private:
  float finalAlphaCumprod_ = 1.0f;
};

}  // namespace

std::unique_ptr<Sampler> makeDdim(const SchedulerConfig& config) {
  return std::make_unique<DdimSampler>(config);
}

}  // namespace sdtune::sched
