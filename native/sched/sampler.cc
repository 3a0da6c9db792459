#include "sched/sampler.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "sched/samplers.h"

namespace sdtune::sched {

at::Tensor randnTensor(at::IntArrayRef shape, const at::TensorOptions& options,
                       c10::ArrayRef<at::Generator> generators) {
  const at::Device device = options.device();
  auto drawDevice = [&](const at::Generator& generator) {
    at::Device own = generator.device();
    if (own.type() == device.type() || own.is_cpu()) return own;
    throw std::invalid_argument("a " + own.str() + " generator cannot draw noise for a " + device.str() +
                                " tensor; use a CPU generator");
  };
  if (generators.empty()) return at::randn(shape, options);
  if (generators.size() == 1) {
    const at::Generator& generator = generators[0];
    return at::randn(shape, generator, options.device(drawDevice(generator))).to(device);
  }
  // One generator per batch row: each draws a [1, ...] slice, concatenated on dim 0.
  if (shape.empty() || shape[0] != static_cast<int64_t>(generators.size())) {
    throw std::invalid_argument("got " + std::to_string(generators.size()) + " generators for a batch of " +
                                (shape.empty() ? std::string("0") : std::to_string(shape[0])) +
                                " rows; pass one generator, or one per row");
  }
  std::vector<int64_t> rowShape(shape.begin(), shape.end());
  rowShape[0] = 1;
  std::vector<at::Tensor> rows;
  for (const at::Generator& generator : generators) {
    rows.push_back(at::randn(rowShape, generator, options.device(drawDevice(generator))));
  }
  return at::cat(rows, 0).to(device);  // [B, ...]
}

// ---------------------------------------------------------------- shared helpers

std::vector<double> spacedTimesteps(const SchedulerConfig& config, int64_t steps, bool roundLinspace) {
  const int64_t train = config.num_train_timesteps;
  std::vector<double> out;
  switch (config.timestep_spacing) {
    case TimestepSpacing::Linspace: {
      for (double t : np::linspace(0, static_cast<double>(train - 1), steps)) {
        out.push_back(roundLinspace ? np::round(t) : static_cast<double>(static_cast<float>(t)));
      }
      break;
    }
    case TimestepSpacing::Leading: {
      // Integer multiples of train // steps, shifted by steps_offset (SD configs use 1).
      const int64_t ratio = train / steps;
      for (int64_t i = 0; i < steps; ++i) out.push_back(static_cast<double>(i * ratio + config.steps_offset));
      break;
    }
    case TimestepSpacing::Trailing: {
      const double ratio = static_cast<double>(train) / static_cast<double>(steps);
      // Counted down from num_train_timesteps, then shifted by -1 (ends at train - 1).
      for (double t : np::arange(static_cast<double>(train), 0, -ratio)) out.push_back(np::round(t) - 1);
      std::reverse(out.begin(), out.end());  // ascending, like the other spacings here
      break;
    }
  }
  std::reverse(out.begin(), out.end());  // descending: the first call is the noisiest
  return out;
}

at::Tensor thresholdSample(const at::Tensor& sample, double ratio, double maxValue) {
  const at::ScalarType dtype = sample.scalar_type();
  // Quantiles need float32/float64 (and clamp is not implemented for CPU half).
  at::Tensor x = (dtype == at::kFloat || dtype == at::kDouble) ? sample : sample.to(at::kFloat);
  at::Tensor flat = x.reshape({x.size(0), -1});                                               // [B, C*H*W]
  at::Tensor s = at::quantile(flat.abs(), ratio, /*dim=*/1).clamp(1, maxValue).unsqueeze(1);  // [B, 1]
  flat = at::clamp(flat, -s, s) / s;
  return flat.reshape(x.sizes()).to(dtype);
}

float scalarLog(float x) {
  return at::log(at::scalar_tensor(x, at::kFloat)).item<float>();
}

float scalarExp(float x) {
  return at::exp(at::scalar_tensor(x, at::kFloat)).item<float>();
}

void unsupported(const char* sampler, const char* field, const std::string& value, const std::string& supported) {
  throw std::invalid_argument("scheduler config: " + std::string(field) + "=" + value + " is not supported by the " +
                              sampler + " sampler (supported: " + supported + ")");
}

// ---------------------------------------------------------------- Sampler

Sampler::Sampler(SamplerKind kind, const SchedulerConfig& config) : kind_(kind), config_(config), schedule_(config) {
  at::Tensor acp = schedule_.alphasCumprod().contiguous();
  acp_.assign(acp.data_ptr<float>(), acp.data_ptr<float>() + acp.numel());
}

void Sampler::useFiniteTerminalSigma() {
  // FP16's smallest positive subnormal: close to 0 without making the first sigma infinite.
  if (config_.rescale_betas_zero_snr) acp_.back() = std::ldexp(1.0f, -24);
}

std::vector<float> Sampler::trainingSigmas() const {
  std::vector<float> sigmas(acp_.size());
  for (size_t i = 0; i < acp_.size(); ++i) sigmas[i] = std::sqrt((1.0f - acp_[i]) / acp_[i]);
  return sigmas;
}

void Sampler::setTimesteps(int64_t steps) {
  if (steps < 1) {
    throw std::invalid_argument("setTimesteps: the number of inference steps must be at least 1 (got " +
                                std::to_string(steps) + ")");
  }
  if (steps > config_.num_train_timesteps) {
    throw std::invalid_argument("setTimesteps: " + std::to_string(steps) +
                                " inference steps exceed num_train_timesteps (" +
                                std::to_string(config_.num_train_timesteps) + ")");
  }
  buildSchedule(steps);
  if (timesteps_.defined() && timesteps_.numel() > 0 && timesteps_.scalar_type() == at::kLong) {
    int64_t lo = timesteps_.min().item<int64_t>(), hi = timesteps_.max().item<int64_t>();
    if (lo < 0 || hi >= config_.num_train_timesteps) {
      timesteps_ = at::Tensor();
      throw std::invalid_argument("setTimesteps(" + std::to_string(steps) + "): timesteps reach " +
                                  std::to_string(lo < 0 ? lo : hi) + ", outside [0, " +
                                  std::to_string(config_.num_train_timesteps) +
                                  "); use fewer steps, or a smaller steps_offset / another timestep_spacing");
    }
  }
  numInferenceSteps_ = steps;
  nextIndex_ = -1;
  resetHistory();
}

void Sampler::checkIndex(int64_t index, const char* op) const {
  if (numCalls() == 0) throw std::logic_error(std::string(op) + ": call setTimesteps() first");
  if (index < 0 || index >= numCalls()) {
    throw std::out_of_range(std::string(op) + ": step index " + std::to_string(index) + " is outside [0, " +
                            std::to_string(numCalls()) + ")");
  }
}

double Sampler::timestepAt(int64_t index) const {
  checkIndex(index, "timestepAt");
  if (timesteps_.scalar_type() == at::kLong) return static_cast<double>(timesteps_.data_ptr<int64_t>()[index]);
  return static_cast<double>(timesteps_.data_ptr<float>()[index]);
}

at::Tensor Sampler::scaleModelInput(const at::Tensor& sample, int64_t index) const {
  checkIndex(index, "scaleModelInput");
  return sample;
}

at::Tensor Sampler::addNoise(const at::Tensor& x0, const at::Tensor& noise, int64_t index) const {
  checkIndex(index, "addNoise");
  at::Tensor t = timesteps_.slice(0, index, index + 1).to(at::kLong);  // [1]: one level for every row
  return schedule_.addNoise(x0, noise, t);
}

StepOutput Sampler::step(const at::Tensor& modelOutput, int64_t index, const at::Tensor& sample,
                         c10::ArrayRef<at::Generator> generators) {
  checkIndex(index, "step");
  if (nextIndex_ >= 0 && index != nextIndex_) {
    throw std::invalid_argument("step: expected step index " + std::to_string(nextIndex_) + " but got " +
                                std::to_string(index) +
                                "; steps run in order (call setTimesteps() to start a new run)");
  }
  if (modelOutput.sizes() != sample.sizes()) {
    throw std::invalid_argument("step: model output " + c10::str(modelOutput.sizes()) + " and sample " +
                                c10::str(sample.sizes()) + " differ in shape");
  }
  if (modelOutput.device() != sample.device()) {
    throw std::invalid_argument("step: model output is on " + modelOutput.device().str() + " but the sample is on " +
                                sample.device().str());
  }
  if (!at::isFloatingType(modelOutput.scalar_type()) || !at::isFloatingType(sample.scalar_type())) {
    throw std::invalid_argument("step: model output and sample must be floating-point tensors");
  }
  StepOutput out = stepAt(modelOutput, index, sample, generators);
  nextIndex_ = index + 1;
  return out;
}

at::Tensor Sampler::clipOrThreshold(const at::Tensor& x0) const {
  if (config_.thresholding) return thresholdSample(x0, config_.dynamic_thresholding_ratio, config_.sample_max_value);
  if (config_.clip_sample) return x0.clamp(-config_.clip_sample_range, config_.clip_sample_range);
  return x0;
}

// ---------------------------------------------------------------- factory

std::unique_ptr<Sampler> makeSampler(SamplerKind kind, const SchedulerConfig& config) {
  switch (kind) {
    case SamplerKind::DDPM: return makeDdpm(config);
    case SamplerKind::DDIM: return makeDdim(config);
    case SamplerKind::PNDM: return makePndm(config);
    case SamplerKind::EulerDiscrete: return makeEuler(config);
    case SamplerKind::EulerAncestral: return makeEulerAncestral(config);
    case SamplerKind::DPMSolverMultistep: return makeDpmSolver(config);
  }
  throw std::invalid_argument("unknown sampler kind");
}

}  // namespace sdtune::sched
