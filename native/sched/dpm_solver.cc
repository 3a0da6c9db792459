// DPM-Solver / DPM-Solver++ multistep (diffusers DPMSolverMultistepScheduler):
// exponential-integrator updates in log-SNR (lambda) time, reusing past model
// outputs for orders 2 and 3. "dpmpp_2m" = dpmsolver++, order 2, midpoint.
// The first step is first order (no history yet); so is the last one whenever
// final_sigmas_type is "zero" (or lower_order_final with < 15 steps, or euler_at_final).
#include <algorithm>
#include <cmath>

#include "sched/samplers.h"

namespace sdtune::sched {

namespace {

// alpha_t, sigma_t of the VP process at a VE sigma: alpha = 1/sqrt(sigma^2 + 1).
struct AlphaSigma {
  float alpha, sigma, lambda;
  explicit AlphaSigma(float veSigma) {
    alpha = 1.0f / std::sqrt(veSigma * veSigma + 1.0f);
    sigma = veSigma * alpha;
    lambda = scalarLog(alpha) - scalarLog(sigma);  // +inf at sigma 0: exp(-h) becomes 0
  }
};

class DpmSolverSampler : public Sampler {
 public:
  explicit DpmSolverSampler(const SchedulerConfig& config) : Sampler(SamplerKind::DPMSolverMultistep, config) {
    std::string& algorithm = config_.algorithm_type;
    if (algorithm == "deis") algorithm = "dpmsolver++";  // diffusers maps it so too
    if (algorithm != "dpmsolver++" && algorithm != "dpmsolver" && algorithm != "sde-dpmsolver++" &&
        algorithm != "sde-dpmsolver") {
      unsupported("DPM-Solver multistep", "algorithm_type", algorithm,
                  "dpmsolver++, dpmsolver, sde-dpmsolver++, sde-dpmsolver");
    }
    if (config_.solver_type == "logrho" || config_.solver_type == "bh1" || config_.solver_type == "bh2") {
      config_.solver_type = "midpoint";
    }
    if (config_.solver_type != "midpoint" && config_.solver_type != "heun") {
      unsupported("DPM-Solver multistep", "solver_type", config_.solver_type, "midpoint, heun");
    }
    if (config_.solver_order < 1 || config_.solver_order > 3) {
      unsupported("DPM-Solver multistep", "solver_order", std::to_string(config_.solver_order), "1, 2, 3");
    }
    sde_ = algorithm.rfind("sde-", 0) == 0;
    dataPrediction_ = algorithm == "dpmsolver++" || algorithm == "sde-dpmsolver++";
    if (sde_ && config_.solver_order == 3)
      unsupported("DPM-Solver multistep", "solver_order", "3", "1, 2 for SDE variants");
    if (config_.final_sigmas_type != "zero" && config_.final_sigmas_type != "sigma_min") {
      unsupported("DPM-Solver multistep", "final_sigmas_type", config_.final_sigmas_type, "zero, sigma_min");
    }
    if (!dataPrediction_ && config_.final_sigmas_type == "zero") {
      unsupported("DPM-Solver multistep", "final_sigmas_type", "zero", "sigma_min with algorithm_type " + algorithm);
    }
    if (config_.variance_type) unsupported("DPM-Solver multistep", "variance_type", *config_.variance_type, "null");
    if (config_.use_karras_sigmas && config_.use_lu_lambdas) {
      unsupported("DPM-Solver multistep", "use_lu_lambdas", "true", "false when use_karras_sigmas is true");
    }
    useFiniteTerminalSigma();
  }

 protected:
  void buildSchedule(int64_t steps) override;
  void resetHistory() override {
    outputs_.assign(static_cast<size_t>(config_.solver_order), at::Tensor());
    lowerOrderNums_ = 0;
  }
  StepOutput stepAt(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                    c10::ArrayRef<at::Generator> generators) override;

 public:
  // alpha_t x0 + sigma_t noise at the call's sigma, computed in x0's dtype like diffusers.
  at::Tensor addNoise(const at::Tensor& x0, const at::Tensor& noise, int64_t index) const override {
    checkIndex(index, "addNoise");
    at::Tensor sigma = at::full({1}, sigmaAt(index), x0.options());  // [1]
    at::Tensor alpha = at::reciprocal((sigma.pow(2) + 1).pow(0.5));
    return alpha * x0 + (sigma * alpha) * noise;
  }

 private:
  at::Tensor convertModelOutput(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample) const;
  at::Tensor firstOrder(const at::Tensor& m0, int64_t index, const at::Tensor& x, const at::Tensor& noise) const;
  at::Tensor secondOrder(int64_t index, const at::Tensor& x, const at::Tensor& noise) const;
  at::Tensor thirdOrder(int64_t index, const at::Tensor& x) const;

  bool sde_ = false;
  bool dataPrediction_ = true;       // ++ variants integrate the x0 prediction, the others epsilon
  std::vector<at::Tensor> outputs_;  // converted model outputs, oldest first, solver_order long
  int64_t lowerOrderNums_ = 0;
};

void DpmSolverSampler::buildSchedule(int64_t steps) {
  const int64_t train = config_.num_train_timesteps;
  // lambda_min_clipped trims the noisiest timesteps (needed for the cosine schedule).
  at::Tensor acp = torch::tensor(acp_, at::kFloat);                          // [T]
  at::Tensor lambdas = at::log(at::sqrt(acp)) - at::log(at::sqrt(1 - acp));  // [T] log-SNR / 2
  const int64_t clipped = (lambdas.to(at::kDouble) < config_.lambda_min_clipped).sum().item<int64_t>();
  const int64_t last = train - clipped;

  // N + 1 points, the last (0) dropped: DPM-Solver's own "leading" differs from DDIM's.
  std::vector<double> timesteps;
  switch (config_.timestep_spacing) {
    case TimestepSpacing::Linspace:
      for (double t : np::linspace(0, static_cast<double>(last - 1), steps + 1)) timesteps.push_back(np::round(t));
      std::reverse(timesteps.begin(), timesteps.end());
      timesteps.pop_back();
      break;
    case TimestepSpacing::Leading: {
      const int64_t ratio = last / (steps + 1);
      for (int64_t i = steps; i >= 1; --i) timesteps.push_back(static_cast<double>(i * ratio + config_.steps_offset));
      break;
    }
    case TimestepSpacing::Trailing: {
      const double ratio = static_cast<double>(train) / static_cast<double>(steps);
      for (double t : np::arange(static_cast<double>(last), 0, -ratio)) timesteps.push_back(np::round(t) - 1);
      break;
    }
  }

  const std::vector<float> table = trainingSigmas();
  std::vector<float> logSigmas(table.size());
  for (size_t i = 0; i < table.size(); ++i) logSigmas[i] = std::log(table[i]);

  std::vector<double> sigmas;
  if (config_.use_karras_sigmas) {
    // rho = 7 ramp over the whole training range, mapped back to rounded timesteps.
    sigmas = np::karrasSigmas(table.front(), table.back(), steps);
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(np::round(np::sigmaToT(s, logSigmas)));
  } else if (config_.use_lu_lambdas) {
    // Uniform steps in log sigma between the training extremes.
    const double lambdaMax = logSigmas.back();
    const double lambdaMin = logSigmas.front();
    for (double r : np::linspace(0, 1, steps)) sigmas.push_back(std::exp(lambdaMax + r * (lambdaMin - lambdaMax)));
    timesteps.clear();
    for (double s : sigmas) timesteps.push_back(np::round(np::sigmaToT(s, logSigmas)));
  } else {
    const std::vector<double> tableAsDouble(table.begin(), table.end());
    for (double t : timesteps) sigmas.push_back(np::interpIndex(t, tableAsDouble));
  }
  std::vector<float> sigmas32(sigmas.begin(), sigmas.end());
  sigmas32.push_back(config_.final_sigmas_type == "zero" ? 0.0f : table.front());

  std::vector<int64_t> values;
  for (double t : timesteps) values.push_back(static_cast<int64_t>(t));
  timesteps_ = torch::tensor(values, at::kLong);  // [steps]
  sigmas_ = torch::tensor(sigmas32, at::kFloat);  // [steps + 1]
}

at::Tensor DpmSolverSampler::convertModelOutput(const at::Tensor& modelOutput, int64_t index,
                                                const at::Tensor& sample) const {
  const AlphaSigma s(sigmaAt(index));
  if (dataPrediction_) {
    at::Tensor x0;  // DPM-Solver++ integrates the data prediction
    switch (config_.prediction_type) {
      case PredictionType::Epsilon: x0 = (sample - s.sigma * modelOutput) / s.alpha; break;
      case PredictionType::Sample: x0 = modelOutput; break;
      case PredictionType::VPrediction: x0 = s.alpha * sample - s.sigma * modelOutput; break;
    }
    return config_.thresholding ? clipOrThreshold(x0) : x0;
  }
  at::Tensor eps;  // DPM-Solver integrates the noise prediction
  switch (config_.prediction_type) {
    case PredictionType::Epsilon: eps = modelOutput; break;
    case PredictionType::Sample: eps = (sample - s.alpha * modelOutput) / s.sigma; break;
    case PredictionType::VPrediction: eps = s.alpha * modelOutput + s.sigma * sample; break;
  }
  if (config_.thresholding) {
    at::Tensor x0 = clipOrThreshold((sample - s.sigma * eps) / s.alpha);
    eps = (sample - s.alpha * x0) / s.sigma;
  }
  return eps;
}

at::Tensor DpmSolverSampler::firstOrder(const at::Tensor& m0, int64_t index, const at::Tensor& x,
                                        const at::Tensor& noise) const {
  const AlphaSigma t(sigmaAt(index + 1)), s(sigmaAt(index));
  const float h = t.lambda - s.lambda;
  const std::string& algorithm = config_.algorithm_type;
  if (algorithm == "dpmsolver++") return (t.sigma / s.sigma) * x - (t.alpha * (scalarExp(-h) - 1.0f)) * m0;
  if (algorithm == "dpmsolver") return (t.alpha / s.alpha) * x - (t.sigma * (scalarExp(h) - 1.0f)) * m0;
  if (algorithm == "sde-dpmsolver++") {
    return (t.sigma / s.sigma * scalarExp(-h)) * x + (t.alpha * (1 - scalarExp(-2.0f * h))) * m0 +
           t.sigma * std::sqrt(1.0f - scalarExp(-2 * h)) * noise;
  }
  return (t.alpha / s.alpha) * x - 2.0f * (t.sigma * (scalarExp(h) - 1.0f)) * m0 +
         t.sigma * std::sqrt(scalarExp(2 * h) - 1.0f) * noise;  // sde-dpmsolver
}

at::Tensor DpmSolverSampler::secondOrder(int64_t index, const at::Tensor& x, const at::Tensor& noise) const {
  const AlphaSigma t(sigmaAt(index + 1)), s0(sigmaAt(index)), s1(sigmaAt(index - 1));
  const at::Tensor& m0 = outputs_[outputs_.size() - 1];
  const at::Tensor& m1 = outputs_[outputs_.size() - 2];
  const float h = t.lambda - s0.lambda;
  const float h0 = s0.lambda - s1.lambda;
  const float r0 = h0 / h;
  const at::Tensor& d0 = m0;
  at::Tensor d1 = (1.0f / r0) * (m0 - m1);  // finite-difference derivative
  const bool midpoint = config_.solver_type == "midpoint";
  const std::string& algorithm = config_.algorithm_type;
  if (algorithm == "dpmsolver++") {
    const float c = t.alpha * (scalarExp(-h) - 1.0f);
    if (midpoint) return (t.sigma / s0.sigma) * x - c * d0 - 0.5f * c * d1;
    return (t.sigma / s0.sigma) * x - c * d0 + (t.alpha * ((scalarExp(-h) - 1.0f) / h + 1.0f)) * d1;
  }
  if (algorithm == "dpmsolver") {
    const float c = t.sigma * (scalarExp(h) - 1.0f);
    if (midpoint) return (t.alpha / s0.alpha) * x - c * d0 - 0.5f * c * d1;
    return (t.alpha / s0.alpha) * x - c * d0 - (t.sigma * ((scalarExp(h) - 1.0f) / h - 1.0f)) * d1;
  }
  if (algorithm == "sde-dpmsolver++") {
    const float c = t.alpha * (1 - scalarExp(-2.0f * h));
    at::Tensor base = (t.sigma / s0.sigma * scalarExp(-h)) * x + c * d0;
    at::Tensor second =
        midpoint ? 0.5f * c * d1 : (t.alpha * ((1.0f - scalarExp(-2.0f * h)) / (-2.0f * h) + 1.0f)) * d1;
    return base + second + t.sigma * std::sqrt(1.0f - scalarExp(-2 * h)) * noise;
  }
  const float c = t.sigma * (scalarExp(h) - 1.0f);  // sde-dpmsolver
  at::Tensor base = (t.alpha / s0.alpha) * x - 2.0f * c * d0;
  at::Tensor second = midpoint ? c * d1 : 2.0f * (t.sigma * ((scalarExp(h) - 1.0f) / h - 1.0f)) * d1;
  return base - second + t.sigma * std::sqrt(scalarExp(2 * h) - 1.0f) * noise;
}

at::Tensor DpmSolverSampler::thirdOrder(int64_t index, const at::Tensor& x) const {
  const AlphaSigma t(sigmaAt(index + 1)), s0(sigmaAt(index)), s1(sigmaAt(index - 1)), s2(sigmaAt(index - 2));
  const at::Tensor& m0 = outputs_[2];
  const at::Tensor& m1 = outputs_[1];
  const at::Tensor& m2 = outputs_[0];
  const float h = t.lambda - s0.lambda, h0 = s0.lambda - s1.lambda, h1 = s1.lambda - s2.lambda;
  const float r0 = h0 / h, r1 = h1 / h;
  at::Tensor d10 = (1.0f / r0) * (m0 - m1);
  at::Tensor d11 = (1.0f / r1) * (m1 - m2);
  at::Tensor d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11);
  at::Tensor d2 = (1.0f / (r0 + r1)) * (d10 - d11);
  if (config_.algorithm_type == "dpmsolver++") {
    return (t.sigma / s0.sigma) * x - (t.alpha * (scalarExp(-h) - 1.0f)) * m0 +
           (t.alpha * ((scalarExp(-h) - 1.0f) / h + 1.0f)) * d1 -
           (t.alpha * ((scalarExp(-h) - 1.0f + h) / (h * h) - 0.5f)) * d2;
  }
  return (t.alpha / s0.alpha) * x - (t.sigma * (scalarExp(h) - 1.0f)) * m0 -
         (t.sigma * ((scalarExp(h) - 1.0f) / h - 1.0f)) * d1 -
         (t.sigma * ((scalarExp(h) - 1.0f - h) / (h * h) - 0.5f)) * d2;
}

StepOutput DpmSolverSampler::stepAt(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                                    c10::ArrayRef<at::Generator> generators) {
  const int64_t calls = numCalls();
  const bool fewSteps = config_.lower_order_final && calls < 15;
  // Improves stability: fall back to lower orders at the end.
  const bool lowerOrderFinal =
      index == calls - 1 && (config_.euler_at_final || fewSteps || config_.final_sigmas_type == "zero");
  const bool lowerOrderSecond = index == calls - 2 && fewSteps;

  at::Tensor converted = convertModelOutput(modelOutput, index, sample);
  for (size_t i = 0; i + 1 < outputs_.size(); ++i) outputs_[i] = outputs_[i + 1];
  outputs_.back() = converted;

  at::Tensor x = sample.to(at::kFloat);  // upcast for the update, as diffusers does
  StepOutput out;
  if (sde_) out.noise = randnTensor(modelOutput.sizes(), modelOutput.options().dtype(at::kFloat), generators);

  const int64_t order = config_.solver_order;
  at::Tensor prev;
  if (order == 1 || lowerOrderNums_ < 1 || lowerOrderFinal) {
    prev = firstOrder(converted, index, x, out.noise);
  } else if (order == 2 || lowerOrderNums_ < 2 || lowerOrderSecond) {
    prev = secondOrder(index, x, out.noise);
  } else {
    prev = thirdOrder(index, x);
  }
  if (lowerOrderNums_ < order) ++lowerOrderNums_;
  out.prevSample = prev.to(modelOutput.scalar_type());
  return out;
}

}  // namespace

std::unique_ptr<Sampler> makeDpmSolver(const SchedulerConfig& config) {
  return std::make_unique<DpmSolverSampler>(config);
}

}  // namespace sdtune::sched
