#include "sched/euler.h"

#include <algorithm>
#include <cmath>

namespace sdtune::sched {

EulerSampler::EulerSampler(SamplerKind kind, const SchedulerConfig& config) : Sampler(kind, config) {
  const char* name = kind == SamplerKind::EulerAncestral ? "euler_ancestral" : "euler";
  if (config_.interpolation_type != "linear") {
    unsupported(name, "interpolation_type", config_.interpolation_type, "linear");
  }
  if (config_.timestep_type != "discrete" && config_.timestep_type != "continuous") {
    unsupported(name, "timestep_type", config_.timestep_type, "discrete, continuous");
  }
  if (kind == SamplerKind::EulerAncestral && config_.prediction_type == PredictionType::Sample) {
    unsupported(name, "prediction_type", "sample", "epsilon, v_prediction");
  }
  useFiniteTerminalSigma();
}

void EulerSampler::buildSchedule(int64_t steps) {
  // Timesteps as float32 values (Euler keeps fractional "linspace" timesteps).
  std::vector<double> timesteps = spacedTimesteps(config_, steps, /*roundLinspace=*/false);
  const std::vector<float> table = trainingSigmas();  // [T] float32
  const std::vector<double> tableAsDouble(table.begin(), table.end());

  std::vector<double> sigmas;  // float64, as np.interp returns
  for (double t : timesteps) sigmas.push_back(np::interpIndex(t, tableAsDouble));

  if (config_.use_karras_sigmas) {
    // The Karras ramp spans the interpolated range unless sigma_min/sigma_max are configured.
    const double sigmaMin = config_.sigma_min.value_or(sigmas.back());
    const double sigmaMax = config_.sigma_max.value_or(sigmas.front());
    sigmas = np::karrasSigmas(sigmaMin, sigmaMax, steps);
    std::vector<float> logSigmas(table.size());
    for (size_t i = 0; i < table.size(); ++i) logSigmas[i] = std::log(table[i]);
    for (size_t i = 0; i < sigmas.size(); ++i) timesteps[i] = np::sigmaToT(sigmas[i], logSigmas);
  }

  std::vector<float> sigmas32(sigmas.begin(), sigmas.end());
  std::vector<float> timesteps32;
  if (config_.timestep_type == "continuous" && config_.prediction_type == PredictionType::VPrediction) {
    // EDM-style continuous timesteps: 0.25 * ln(sigma).
    for (float s : sigmas32) timesteps32.push_back(0.25f * scalarLog(s));
  } else {
    timesteps32.assign(timesteps.begin(), timesteps.end());
  }
  sigmas32.push_back(0.0f);
  timesteps_ = torch::tensor(timesteps32, at::kFloat);  // [steps]
  sigmas_ = torch::tensor(sigmas32, at::kFloat);        // [steps + 1], last 0
}

float EulerSampler::initNoiseSigma() const {
  float maxSigma = 0;
  if (sigmas_.defined()) {
    maxSigma = sigmas_.max().item<float>();
  } else {
    for (float s : trainingSigmas()) maxSigma = std::max(maxSigma, s);
  }
  if (config_.timestep_spacing != TimestepSpacing::Leading) return maxSigma;
  return std::sqrt(maxSigma * maxSigma + 1.0f);
}

at::Tensor EulerSampler::scaleModelInput(const at::Tensor& sample, int64_t index) const {
  checkIndex(index, "scaleModelInput");
  const float sigma = sigmaAt(index);
  return sample / std::sqrt(sigma * sigma + 1.0f);
}

at::Tensor EulerSampler::addNoise(const at::Tensor& x0, const at::Tensor& noise, int64_t index) const {
  checkIndex(index, "addNoise");
  at::Tensor sigma = at::full({1}, sigmaAt(index), x0.options());  // in x0's dtype, as diffusers casts the table
  return x0 + noise * sigma;
}

at::Tensor EulerSampler::predictOriginal(const at::Tensor& modelOutput, float sigma, const at::Tensor& sample) const {
  switch (config_.prediction_type) {
    case PredictionType::Epsilon: return sample - sigma * modelOutput;
    case PredictionType::Sample: return modelOutput;
    case PredictionType::VPrediction: {
      const float sigmaSq1 = sigma * sigma + 1.0f;
      return modelOutput * (-sigma / std::sqrt(sigmaSq1)) + (sample / sigmaSq1);
    }
  }
  return modelOutput;
}

StepOutput EulerSampler::stepAt(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                                c10::ArrayRef<at::Generator> generators) {
  // Without churn (s_churn = 0, what pipelines use) sigma_hat == sigma; diffusers still
  // draws the churn noise every step, so the draw happens here too to keep the RNG in step.
  StepOutput out;
  out.noise = randnTensor(modelOutput.sizes(), modelOutput.options(), generators);
  at::Tensor x = sample.to(at::kFloat);  // upcast for the update, as diffusers does
  const float sigma = sigmaAt(index);
  at::Tensor x0 = predictOriginal(modelOutput, sigma, x);
  at::Tensor derivative = (x - x0) / sigma;     // dx/dsigma
  const float dt = sigmaAt(index + 1) - sigma;  // negative: towards less noise
  out.prevSample = (x + derivative * dt).to(modelOutput.scalar_type());
  out.predOriginalSample = x0;
  return out;
}

std::unique_ptr<Sampler> makeEuler(const SchedulerConfig& config) {
  return std::make_unique<EulerSampler>(SamplerKind::EulerDiscrete, config);
}

}  // namespace sdtune::sched
