#include "sched/schedule.h"

#include <cmath>
#include <stdexcept>

namespace sdtune::sched {

const char* toString(BetaSchedule value) {
  switch (value) {
    case BetaSchedule::Linear: return "linear";
    case BetaSchedule::ScaledLinear: return "scaled_linear";
    case BetaSchedule::SquaredCosCapV2: return "squaredcos_cap_v2";
  }
  return "?";
}

const char* toString(PredictionType value) {
  switch (value) {
    case PredictionType::Epsilon: return "epsilon";
    case PredictionType::VPrediction: return "v_prediction";
    case PredictionType::Sample: return "sample";
  }
  return "?";
}

const char* toString(TimestepSpacing value) {
  switch (value) {
    case TimestepSpacing::Leading: return "leading";
    case TimestepSpacing::Linspace: return "linspace";
    case TimestepSpacing::Trailing: return "trailing";
  }
  return "?";
}

namespace {

// diffusers' betas_for_alpha_bar with the cosine ("squaredcos_cap_v2") transform:
// computed in Python floats (double), stored as float32.
at::Tensor cosineBetas(int64_t steps) {
  auto alphaBar = [](double t) {
    double c = std::cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
  };
  std::vector<float> betas(static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i) {
    double t1 = static_cast<double>(i) / static_cast<double>(steps);
    double t2 = static_cast<double>(i + 1) / static_cast<double>(steps);
    betas[static_cast<size_t>(i)] = static_cast<float>(std::min(1 - alphaBar(t2) / alphaBar(t1), 0.999));
  }
  return torch::tensor(betas, at::kFloat);
}

}  // namespace

at::Tensor rescaleZeroTerminalSnr(const at::Tensor& betas) {
  at::Tensor alphas = 1.0 - betas;                           // [T]
  at::Tensor alphasBarSqrt = at::cumprod(alphas, 0).sqrt();  // [T]
  at::Tensor first = alphasBarSqrt[0].clone();
  at::Tensor last = alphasBarSqrt[-1].clone();
  // Shift so the last value is zero, then scale so the first is back where it was.
  alphasBarSqrt = alphasBarSqrt - last;
  alphasBarSqrt = alphasBarSqrt * (first / (first - last));
  at::Tensor alphasBar = alphasBarSqrt.pow(2);
  at::Tensor ratios = alphasBar.slice(0, 1) / alphasBar.slice(0, 0, -1);  // undo the cumprod: [T-1]
  return 1 - at::cat({alphasBar.slice(0, 0, 1), ratios});
}

at::Tensor makeBetas(const SchedulerConfig& config) {
  const int64_t steps = config.num_train_timesteps;
  if (steps < 1) throw std::invalid_argument("scheduler config: num_train_timesteps must be at least 1");
  at::Tensor betas;
  if (config.trained_betas) {
    if (static_cast<int64_t>(config.trained_betas->size()) != steps) {
      throw std::invalid_argument("scheduler config: trained_betas holds " +
                                  std::to_string(config.trained_betas->size()) + " values but num_train_timesteps is " +
                                  std::to_string(steps));
    }
    std::vector<float> values(config.trained_betas->begin(), config.trained_betas->end());
    betas = torch::tensor(values, at::kFloat);
  } else {
    switch (config.beta_schedule) {
      case BetaSchedule::Linear: betas = at::linspace(config.beta_start, config.beta_end, steps, at::kFloat); break;
      case BetaSchedule::ScaledLinear:
        // Latent diffusion's schedule: linear in sqrt(beta), squared in float32.
        betas =
            at::linspace(std::pow(config.beta_start, 0.5), std::pow(config.beta_end, 0.5), steps, at::kFloat).pow(2);
        break;
      case BetaSchedule::SquaredCosCapV2: betas = cosineBetas(steps); break;
    }
  }
  if (config.rescale_betas_zero_snr) betas = rescaleZeroTerminalSnr(betas);
  return betas;
}

NoiseSchedule::NoiseSchedule(const SchedulerConfig& config) : config_(config) {
  betas_ = makeBetas(config_);
  alphasCumprod_ = at::cumprod(1.0 - betas_, 0);  // float32, as torch.cumprod(alphas, dim=0)
}

void NoiseSchedule::checkTimesteps(const at::Tensor& timesteps, int64_t batch, const char* op) const {
  if (!timesteps.defined() || !at::isIntegralType(timesteps.scalar_type(), /*includeBool=*/false)) {
    throw std::invalid_argument(std::string(op) + ": timesteps must be an integer tensor");
  }
  if (timesteps.dim() > 1 || (timesteps.numel() != 1 && timesteps.numel() != batch)) {
    throw std::invalid_argument(std::string(op) + ": timesteps must hold one value or one per batch row (" +
                                std::to_string(batch) + "), got shape " + c10::str(timesteps.sizes()));
  }
  // An out-of-range index would be a device-side assert on CUDA: check first.
  auto range = at::aminmax(timesteps.to(at::kCPU));
  int64_t lo = std::get<0>(range).item<int64_t>();
  int64_t hi = std::get<1>(range).item<int64_t>();
  if (lo < 0 || hi >= config_.num_train_timesteps) {
    throw std::out_of_range(std::string(op) + ": timesteps must lie in [0, " +
                            std::to_string(config_.num_train_timesteps) + "), got values from " + std::to_string(lo) +
                            " to " + std::to_string(hi));
  }
}

std::pair<at::Tensor, at::Tensor> NoiseSchedule::coefficients(const at::Tensor& timesteps,
                                                              const at::Tensor& like) const {
  // Like diffusers: the table is cast to the sample's dtype before indexing.
  at::Tensor acp = alphasCumprod_.to(like.device(), like.scalar_type());  // [T]
  at::Tensor index = timesteps.to(like.device()).reshape({-1});           // [B] or [1]
  at::Tensor picked = acp.index_select(0, index);                         // [B]
  std::vector<int64_t> shape(static_cast<size_t>(std::max<int64_t>(like.dim(), 1)), 1);
  shape[0] = picked.size(0);
  at::Tensor sqrtAlpha = picked.sqrt().reshape(shape);           // [B, 1, 1, ...]
  at::Tensor sqrtOneMinus = (1 - picked).sqrt().reshape(shape);  // [B, 1, 1, ...]
  return {sqrtAlpha, sqrtOneMinus};
}

at::Tensor NoiseSchedule::addNoise(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& timesteps) const {
  if (x0.sizes() != noise.sizes()) {
    throw std::invalid_argument("addNoise: samples " + c10::str(x0.sizes()) + " and noise " + c10::str(noise.sizes()) +
                                " differ in shape");
  }
  checkTimesteps(timesteps, x0.dim() > 0 ? x0.size(0) : 1, "addNoise");
  auto [sqrtAlpha, sqrtOneMinus] = coefficients(timesteps, x0);
  return sqrtAlpha * x0 + sqrtOneMinus * noise;
}

at::Tensor NoiseSchedule::getVelocity(const at::Tensor& x0, const at::Tensor& noise,
                                      const at::Tensor& timesteps) const {
  if (x0.sizes() != noise.sizes()) {
    throw std::invalid_argument("getVelocity: samples " + c10::str(x0.sizes()) + " and noise " +
                                c10::str(noise.sizes()) + " differ in shape");
  }
  checkTimesteps(timesteps, x0.dim() > 0 ? x0.size(0) : 1, "getVelocity");
  auto [sqrtAlpha, sqrtOneMinus] = coefficients(timesteps, x0);
  return sqrtAlpha * noise - sqrtOneMinus * x0;
}

at::Tensor NoiseSchedule::snr(const at::Tensor& timesteps) const {
  checkTimesteps(timesteps, timesteps.numel(), "snr");
  at::Tensor index = timesteps.reshape({-1});
  at::Tensor alpha = alphasCumprod_.sqrt().to(timesteps.device()).index_select(0, index).to(at::kFloat);
  at::Tensor sigma = (1.0 - alphasCumprod_).sqrt().to(timesteps.device()).index_select(0, index).to(at::kFloat);
  return (alpha / sigma).pow(2).reshape(timesteps.sizes());  // same shape as timesteps
}

}  // namespace sdtune::sched
