// One training step of Stable Diffusion fine-tuning, as diffusers' training
// scripts compute it: latents (VAE sample, or cached), noise and timesteps from
// the trainer's own generator, the noisy input, the UNet prediction, the loss
// (epsilon / v-prediction target, min-SNR-gamma weighting, prior preservation),
// backward (loss-scaled in float16), and at each accumulation boundary: unscale,
// clip, the optimizer (AdamW, Prodigy, Adafactor or Lion), EMA. Everything that decides the next step lives in
// stateDict(), so a resumed run continues bit for bit.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "sched/schedule.h"
#include "train/ema.h"
#include "train/loss_scaler.h"
#include "train/optimizer.h"

namespace sdtune::train {

// The parameters one learning rate applies to ("unet" or "text_encoder").
struct ParamGroup {
  std::string name;
  std::vector<std::pair<std::string, torch::Tensor>> params;  // updated in place
};

struct TrainerOptions {
  sched::SchedulerConfig noise;  // the training noise schedule (DDPM)
  sched::PredictionType predictionType = sched::PredictionType::Epsilon;
  double snrGamma = 0.0;     // 0: plain mse
  double noiseOffset = 0.0;  // 0: off
  double priorLossWeight = 1.0;
  int64_t gradientAccumulationSteps = 1;
  double maxGradNorm = 0.0;    // 0: measure only
  OptimizerOptions optimizer;  // AdamW unless set
  LossScalerOptions lossScaling;
  bool useEma = false;
  EmaOptions ema;
  uint64_t seed = 0;
  bool sampleLatents = true;  // VAE posterior sample (diffusers); false: the mean (kohya's cache)
  int64_t clipSkip = 0;
  // The text encoder trains (its forward keeps a graph) — false: no_grad.
  bool trainTextEncoder = false;
};

// One micro-batch. Rows [0, B - priorRows) are instance/caption rows, the last
// priorRows rows are class images (DreamBooth prior preservation, collated after).
struct TrainBatch {
  torch::Tensor pixels;               // [B, 3, H, W] in [-1, 1] (encoded with the VAE), or
  torch::Tensor latentMean;           // cached posterior mean [B, 4, h, w] ...
  torch::Tensor latentStd;            // ... and std (sampled when sampleLatents), or
  torch::Tensor latents;              // latents already scaled (tests)
  torch::Tensor inputIds;             // [B, 77] int64 (through the text encoder), or
  torch::Tensor encoderHiddenStates;  // cached [B, 77, D]
  torch::Tensor noise;                // optional override (tests), else drawn
  torch::Tensor timesteps;            // optional override (tests), else drawn
  int64_t priorRows = 0;
  // Data parallel: this rank's rows of a global batch of drawRows.. rows. Random draws are made for
  // the whole global batch (identically on every rank) and these rows kept, so N ranks draw
  // what one process with the global batch would. Undefined: the batch is the whole batch.
  torch::Tensor globalRows;  // int64 [B]: row indices into the global batch
  int64_t globalBatch = 0;   // rows of the global batch
  // Scales this micro-batch's gradient: a rank holding B_r of a global batch's B rows weighs
  // B_r * worldSize / B, so the average over ranks is the global batch's mean loss gradient.
  double lossWeight = 1.0;
};

struct StepResult {
  double loss = 0;          // the loss of this micro-batch (before accumulation division)
  double instanceLoss = 0;  // prior preservation: the two parts
  double priorLoss = 0;
  bool optimizerStepped = false;     // an accumulation boundary was reached
  bool overflow = false;             // non-finite gradients: the step was skipped
  bool gradientsAveraged = false;    // data parallel: the backward returned the mean over ranks
  bool gradientsOverlapped = false;  // ... and its all-reduces ran while the backward went on
  double gradNorm = 0;               // at a boundary: total norm before clipping
  double lossScale = 1;
  int64_t microStep = 0;      // micro-batches done
  int64_t optimizerStep = 0;  // optimizer steps done
  torch::Tensor modelPred;    // kept only when asked (tests)
  // Wall time of this step's phases in ms, as the peer benchmark splits diffusers' step:
  // forward (noise, UNet, loss, its value read), backward, clip (unscale + norm), optimizer (+ zero grad).
  struct {
    double forward = 0, backward = 0, clip = 0, optimizer = 0;
  } phaseMs;
};

class Trainer {
 public:
  Trainer(models::UNet2DConditionModel unet, models::CLIPTextModel textEncoder, models::AutoencoderKL vae,
          double vaeScalingFactor, std::vector<ParamGroup> groups, TrainerOptions options);

  // lrs: one learning rate per group, in group order.
  StepResult step(const TrainBatch& batch, const std::vector<double>& lrs, bool keepPrediction = false);

  // Every tensor that decides what happens next: trainable parameters ("param.<group>.<name>"),
  // optimizer state ("optim.<group>.<...>"), EMA ("ema.<name>"), loss scaler, generator, counters.
  std::vector<std::pair<std::string, torch::Tensor>> stateDict() const;
  void loadStateDict(const std::map<std::string, torch::Tensor>& state);

  // The EMA weights copied into the UNet's trainable parameters (for saving); no-op without EMA.
  void copyEmaToModel();
  const std::vector<ParamGroup>& groups() const { return groups_; }
  // Data parallel: called with the trained parameters' gradients after backward, before unscale,
  // clipping and the optimizer step (at accumulation boundaries); it averages them across ranks in place.
  using GradientReducer = std::function<void(const std::vector<torch::Tensor>&)>;
  void setGradientReducer(GradientReducer reducer) { gradientReducer_ = std::move(reducer); }
  // Data parallel: the backward of a micro-step that ends an accumulation boundary, averaging the
  // gradients as it goes (bucketed all-reduces launched as gradients arrive); the gradient reducer
  // is then skipped (also under gradient checkpointing: its nested backwards fire the same hooks).
  // Returns false when the gradients had to be averaged after the backward instead (see
  // ProcessGroup::backwardOverlapped).
  using OverlappedBackward = std::function<bool(const torch::Tensor& loss)>;
  void setOverlappedBackward(OverlappedBackward backward) { overlappedBackward_ = std::move(backward); }
  int64_t optimizerStep() const { return optimizerStep_; }

 private:
  StepResult stepInTrainMode(const TrainBatch& batch, const std::vector<double>& lrs, bool keepPrediction);
  torch::Tensor drawLatents(const TrainBatch& batch);
  torch::Tensor encodeText(const TrainBatch& batch);
  torch::Tensor target(const torch::Tensor& latents, const torch::Tensor& noise, const torch::Tensor& t) const;
  std::vector<torch::Tensor> grads() const;
  void backward(const torch::Tensor& loss, StepResult& result);
  void optimizerBoundary(const std::vector<double>& lrs, StepResult& result);
  torch::Tensor randn(at::IntArrayRef shape, const torch::Tensor& like);
  torch::Tensor randTimesteps(int64_t rows);

  models::UNet2DConditionModel unet_;
  models::CLIPTextModel textEncoder_;
  models::AutoencoderKL vae_;
  double vaeScalingFactor_;
  std::vector<ParamGroup> groups_;
  TrainerOptions options_;
  sched::NoiseSchedule schedule_;
  std::vector<std::unique_ptr<Optimizer>> optimizers_;  // one per group
  LossScaler scaler_;
  std::unique_ptr<Ema> ema_;  // over the "unet" group
  size_t emaGroup_ = 0;
  at::Generator generator_;  // CPU: every random draw of training
  int64_t microStep_ = 0;
  int64_t optimizerStep_ = 0;
  GradientReducer gradientReducer_;
  OverlappedBackward overlappedBackward_;
  torch::Tensor drawRows_;  // the current batch's globalRows (undefined: draw the batch's own rows)
  int64_t drawTotal_ = 0;
};

}  // namespace sdtune::train
