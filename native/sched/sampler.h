// Samplers: the inference side of a diffusers scheduler, one class per algorithm,
// behind one interface a denoising loop drives by step index:
//
//   auto sampler = sched::makeSampler(kind, resolvedConfig);  // resolved in TypeScript
//   sampler->setTimesteps(25);
//   latents = latents * sampler->initNoiseSigma();
//   for (int64_t i = 0; i < sampler->numCalls(); ++i) {
//     at::Tensor input = sampler->scaleModelInput(latents, i);
//     at::Tensor eps = unet(input, sampler->timestepAt(i), ...);
//     latents = sampler->step(eps, i, latents, generator).prevSample;
//   }
//
// Steps must be taken in order (multistep samplers keep history); the first step
// may start at any index (img2img). Random draws follow diffusers' randn_tensor.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "sched/schedule.h"

namespace sdtune::sched {

enum class SamplerKind { DDPM, DDIM, PNDM, EulerDiscrete, EulerAncestral, DPMSolverMultistep };

struct StepOutput {
  at::Tensor prevSample;          // the sample for the next model call (same shape as the input sample)
  at::Tensor predOriginalSample;  // x0 estimate; undefined where diffusers returns none (PNDM, DPM-Solver)
  at::Tensor noise;               // the random draw this step used; undefined when it drew none
};

// diffusers' randn_tensor: a CPU generator draws on the CPU, then the result moves to
// options' device (so a seed gives the same latents on every device). No generator:
// the device's default generator. Several generators: one per batch row (shape[0]).
at::Tensor randnTensor(at::IntArrayRef shape, const at::TensorOptions& options,
                       c10::ArrayRef<at::Generator> generators = {});

class Sampler {
 public:
  Sampler(SamplerKind kind, const SchedulerConfig& config);
  virtual ~Sampler() = default;
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  SamplerKind kind() const { return kind_; }
  const SchedulerConfig& config() const { return config_; }
  // The forward process of this config (betas, alphas_cumprod, add_noise, ...).
  const NoiseSchedule& schedule() const { return schedule_; }

  // Builds the inference schedule for `steps` >= 1 steps and forgets any history.
  void setTimesteps(int64_t steps);
  int64_t numInferenceSteps() const { return numInferenceSteps_; }
  // Model calls per run: timesteps().size(0) (PNDM with skip_prk_steps makes N + 1).
  int64_t numCalls() const { return timesteps_.defined() ? timesteps_.size(0) : 0; }
  // diffusers' scheduler.order (1 for every sampler here).
  int64_t order() const { return 1; }

  // [numCalls] CPU: int64 (DDPM, DDIM, PNDM, DPM-Solver) or float32 (Euler, Euler-a).
  const at::Tensor& timesteps() const { return timesteps_; }
  // The timestep fed to the model at call `index`.
  double timestepAt(int64_t index) const;
  // [numCalls + 1] float32 CPU for sigma-based samplers (Euler, Euler-a, DPM-Solver); undefined otherwise.
  const at::Tensor& sigmas() const { return sigmas_; }
  // The initial latents are randn * initNoiseSigma() (float32 as diffusers computes it).
  virtual float initNoiseSigma() const { return 1.0f; }

  // The model input at call `index` (identity except for the Euler samplers).
  virtual at::Tensor scaleModelInput(const at::Tensor& sample, int64_t index) const;

  // img2img: x0 noised to the level of call `index` (diffusers' scheduler.add_noise with
  // begin_index = index): sqrt(acp) x0 + sqrt(1 - acp) noise, or x0 + sigma noise for the
  // Euler samplers. One level for the whole batch, in x0's dtype and device.
  virtual at::Tensor addNoise(const at::Tensor& x0, const at::Tensor& noise, int64_t index) const;

  // One denoising step from the model output at call `index`.
  StepOutput step(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                  c10::ArrayRef<at::Generator> generators = {});

 protected:
  // Fills timesteps_ (and sigmas_) for `steps` inference steps.
  virtual void buildSchedule(int64_t steps) = 0;
  // Forgets the history of multistep samplers.
  virtual void resetHistory() {}
  virtual StepOutput stepAt(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                            c10::ArrayRef<at::Generator> generators) = 0;

  void checkIndex(int64_t index, const char* op) const;
  // alphas_cumprod[t] (the sampler's own table) as a float, like indexing the float32 tensor.
  // Bounds-checked: a timestep outside the schedule (e.g. 1000 steps with steps_offset 1)
  // is an error, as diffusers' IndexError, never a read past the table.
  float alphaCumprod(int64_t t) const {
    if (t < 0 || static_cast<size_t>(t) >= acp_.size()) {
      throw std::out_of_range("timestep " + std::to_string(t) + " is outside the noise schedule [0, " +
                              std::to_string(acp_.size()) + "): lower the step count or steps_offset");
    }
    return acp_[static_cast<size_t>(t)];
  }
  float sigmaAt(int64_t index) const { return sigmas_.data_ptr<float>()[index]; }
  int64_t intTimestepAt(int64_t index) const { return timesteps_.data_ptr<int64_t>()[index]; }
  // x0 clipping / dynamic thresholding as configured (DDPM, DDIM, DPM-Solver).
  at::Tensor clipOrThreshold(const at::Tensor& x0) const;
  // Sigma samplers set alphas_cumprod[-1] = 2^-24 under zero-SNR rescaling so the first sigma stays finite.
  void useFiniteTerminalSigma();
  // sqrt((1 - acp) / acp) over the training table, in float32 (diffusers' self.sigmas).
  std::vector<float> trainingSigmas() const;

  SamplerKind kind_;
  SchedulerConfig config_;
  NoiseSchedule schedule_;
  std::vector<float> acp_;  // alphas_cumprod as the sampler uses it
  at::Tensor timesteps_;
  at::Tensor sigmas_;
  int64_t numInferenceSteps_ = 0;

 private:
  int64_t nextIndex_ = -1;  // the index the next step must have; -1 before the first step
};

// ---- the factory

// Sampler names (config.h maps them to algorithms; their presets are set in TypeScript):
// ddpm, ddim, pndm, euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras, dpm_multistep.
const std::vector<std::string>& samplerNames();

// Builds a sampler from a resolved config (src/config/scheduler.ts resolves raw configs).
std::unique_ptr<Sampler> makeSampler(SamplerKind kind, const SchedulerConfig& config);

}  // namespace sdtune::sched
