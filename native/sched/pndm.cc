// PNDM's linear multistep part (PLMS, diffusers PNDMScheduler.step_plms) with
// skip_prk_steps=true as Stable Diffusion configs set it. The first step is
// Heun-like: it needs a second model call at the *same* timestep, hence N + 1
// calls with the second timestep repeated (901, 801, 801, 701, ...).
#include <cmath>
#include <deque>

#include "sched/samplers.h"

namespace sdtune::sched {

namespace {

class PndmSampler : public Sampler {
 public:
  explicit PndmSampler(const SchedulerConfig& config) : Sampler(SamplerKind::PNDM, config) {
    if (!config_.skip_prk_steps) {
      unsupported("pndm", "skip_prk_steps", "false", "true (the Runge-Kutta warm-up steps are not implemented)");
    }
    if (config_.prediction_type == PredictionType::Sample) {
      unsupported("pndm", "prediction_type", "sample", "epsilon, v_prediction");
    }
    finalAlphaCumprod_ = config_.set_alpha_to_one ? 1.0f : alphaCumprod(0);
  }

 protected:
  void buildSchedule(int64_t steps) override {
    // spacedTimesteps is descending; diffusers' _timesteps is the same list ascending.
    std::vector<double> down = spacedTimesteps(config_, steps, /*roundLinspace=*/true);
    std::vector<int64_t> values;
    // plms_timesteps = reversed(_timesteps[:-1] + _timesteps[-2:-1] + _timesteps[-1:]).
    for (size_t i = 0; i < down.size(); ++i) {
      values.push_back(static_cast<int64_t>(down[i]));
      if (i == 1) values.push_back(static_cast<int64_t>(down[i]));  // the repeated second timestep
    }
    timesteps_ = torch::tensor(values, at::kLong);  // [steps + 1], or [1] for one step
  }

  void resetHistory() override {
    ets_.clear();
    counter_ = 0;
    curSample_ = at::Tensor();
  }

  StepOutput stepAt(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                    c10::ArrayRef<at::Generator>) override {
    const int64_t ratio = config_.num_train_timesteps / numInferenceSteps_;
    int64_t t = intTimestepAt(index);
    int64_t prevT = t - ratio;
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.pop_front();  // keep the last 3, then add this one
      ets_.push_back(modelOutput);
    } else {
      // The repeated call re-evaluates at t: the step still goes from t + ratio to t.
      prevT = t;
      t = t + ratio;
    }

    at::Tensor x = sample;
    at::Tensor eps;
    const size_t n = ets_.size();
    if (n == 1 && counter_ == 0) {
      eps = modelOutput;
      curSample_ = sample;
    } else if (n == 1 && counter_ == 1) {
      eps = (modelOutput + ets_.back()) / 2;
      x = curSample_;
      curSample_ = at::Tensor();
    } else if (n == 2) {
      eps = (3 * ets_[1] - ets_[0]) / 2;
    } else if (n == 3) {
      eps = (23 * ets_[2] - 16 * ets_[1] + 5 * ets_[0]) / 12;
    } else {
      eps = (1.0 / 24) * (55 * ets_[3] - 59 * ets_[2] + 37 * ets_[1] - 9 * ets_[0]);
    }

    StepOutput out;
    out.prevSample = prevSample(x, t, prevT, eps);
    ++counter_;
    return out;
  }

 private:
  // Formula (9) of the PNDM paper: x_{t-1} from x_t and the (combined) noise estimate.
  at::Tensor prevSample(const at::Tensor& sample, int64_t t, int64_t prevT, at::Tensor eps) const {
    const float alphaProd = alphaCumprod(t);
    const float alphaProdPrev = prevT >= 0 ? alphaCumprod(prevT) : finalAlphaCumprod_;
    const float betaProd = 1.0f - alphaProd;
    const float betaProdPrev = 1.0f - alphaProdPrev;
    if (config_.prediction_type == PredictionType::VPrediction) {
      eps = std::sqrt(alphaProd) * eps + std::sqrt(betaProd) * sample;
    }
    const float sampleCoeff = std::sqrt(alphaProdPrev / alphaProd);
    const float denom = alphaProd * std::sqrt(betaProdPrev) + std::sqrt(alphaProd * betaProd * alphaProdPrev);
    return sampleCoeff * sample - (alphaProdPrev - alphaProd) * eps / denom;
  }

  float finalAlphaCumprod_ = 1.0f;
  std::deque<at::Tensor> ets_;  // past model outputs, oldest first (at most 4)
  int64_t counter_ = 0;
  at::Tensor curSample_;
};

}  // namespace

std::unique_ptr<Sampler> makePndm(const SchedulerConfig& config) {
  return std::make_unique<PndmSampler>(config);
}

}  // namespace sdtune::sched
