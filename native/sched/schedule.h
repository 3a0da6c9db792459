// The diffusion noise schedule shared by every sampler and by training:
// betas -> alphas_cumprod exactly as diffusers 0.27.2 computes them (float32),
// plus the training-time forward process (add_noise, get_velocity, compute_snr).
//
// SchedulerConfig is the plain, fully resolved form of a diffusers
// scheduler_config.json (see config.h for how a raw config + overrides becomes
// one with diffusers' from_config semantics). Field names mirror the JSON keys.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace sdtune::sched {

enum class BetaSchedule { Linear, ScaledLinear, SquaredCosCapV2 };
enum class PredictionType { Epsilon, VPrediction, Sample };
enum class TimestepSpacing { Leading, Linspace, Trailing };

const char* toString(BetaSchedule value);
const char* toString(PredictionType value);
const char* toString(TimestepSpacing value);

struct SchedulerConfig {
  // ---- every scheduler
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::Linear;
  std::optional<std::vector<double>> trained_betas;  // replaces the beta_* fields when set
  PredictionType prediction_type = PredictionType::Epsilon;
  TimestepSpacing timestep_spacing = TimestepSpacing::Leading;
  int64_t steps_offset = 0;
  bool rescale_betas_zero_snr = false;

  // ---- x0 clipping / dynamic thresholding (DDPM, DDIM; thresholding also DPM-Solver)
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;

  // ---- DDIM / PNDM
  bool set_alpha_to_one = true;
  double eta = 0.0;  // DDIM's step(eta=...): a sampler option, not a diffusers config key
  bool skip_prk_steps = false;

  // ---- DDPM ("fixed_small", ...) and DPM-Solver (unset = null)
  std::optional<std::string> variance_type;

  // ---- Euler
  std::string interpolation_type = "linear";
  bool use_karras_sigmas = false;
  std::optional<double> sigma_min;
  std::optional<double> sigma_max;
  std::string timestep_type = "discrete";

  // ---- DPM-Solver multistep
  int64_t solver_order = 2;
  std::string algorithm_type = "dpmsolver++";
  std::string solver_type = "midpoint";
  bool lower_order_final = true;
  bool euler_at_final = false;
  bool use_lu_lambdas = false;
  std::string final_sigmas_type = "zero";
  double lambda_min_clipped = -std::numeric_limits<double>::infinity();
};

// [num_train_timesteps] float32 CPU betas, rescaled to zero terminal SNR when configured.
at::Tensor makeBetas(const SchedulerConfig& config);

// diffusers' rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1), in float32.
at::Tensor rescaleZeroTerminalSnr(const at::Tensor& betas);

// The forward (noising) process of DDPMScheduler: what training uses.
// Tables live on the CPU in float32; every op follows its inputs' device and dtype.
class NoiseSchedule {
 public:
  explicit NoiseSchedule(const SchedulerConfig& config);

  const SchedulerConfig& config() const { return config_; }
  int64_t numTrainTimesteps() const { return config_.num_train_timesteps; }
  const at::Tensor& betas() const { return betas_; }                  // [T] float32 CPU
  const at::Tensor& alphasCumprod() const { return alphasCumprod_; }  // [T] float32 CPU

  // sqrt(acp[t]) * x0 + sqrt(1 - acp[t]) * noise, with one t per batch row.
  // x0, noise: [B, ...]; timesteps: [B] integer, any device.
  at::Tensor addNoise(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& timesteps) const;
  // The v-prediction target: sqrt(acp[t]) * noise - sqrt(1 - acp[t]) * x0.
  at::Tensor getVelocity(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& timesteps) const;
  // diffusers.training_utils.compute_snr: (sqrt(acp) / sqrt(1 - acp))^2 at t; float32 on t's device.
  at::Tensor snr(const at::Tensor& timesteps) const;

 private:
  // sqrt(acp[t]) and sqrt(1 - acp[t]) in `like`'s dtype and device, shaped [B, 1, 1, ...].
  std::pair<at::Tensor, at::Tensor> coefficients(const at::Tensor& timesteps, const at::Tensor& like) const;
  void checkTimesteps(const at::Tensor& timesteps, int64_t batch, const char* op) const;

  SchedulerConfig config_;
  at::Tensor betas_;
  at::Tensor alphasCumprod_;
};

}  // namespace sdtune::sched
