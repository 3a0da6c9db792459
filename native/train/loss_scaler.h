// Dynamic loss scaling for float16 training (torch.cuda.amp.GradScaler's rules):
// the loss is multiplied by `scale` before backward; gradients are unscaled before
// clipping and the step; a step whose gradients overflowed is skipped and the
// scale halves; after `growthInterval` clean steps the scale doubles.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace sdtune::train {

struct LossScalerOptions {
  bool enabled = false;
  double initScale = 65536.0;
  double growthFactor = 2.0;
  double backoffFactor = 0.5;
  int64_t growthInterval = 2000;
};

class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {});
  bool enabled() const { return options_.enabled; }
  double scale() const { return options_.enabled ? scale_ : 1.0; }
  torch::Tensor scaleLoss(const torch::Tensor& loss) const { return options_.enabled ? loss * scale_ : loss; }
  // Divides grads by the scale in place; returns false when any is inf/nan.
  bool unscale(const std::vector<torch::Tensor>& grads) const;
  // Records the outcome of a step (overflow -> backoff, else growth bookkeeping).
  void update(bool overflowed);

  int64_t skippedSteps() const { return skipped_; }
  // [scale, growth tracker, skipped] for checkpoints.
  torch::Tensor state() const;
  void loadState(const torch::Tensor& state);

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t goodSteps_ = 0;
  int64_t skipped_ = 0;
};

// True when every defined gradient is finite (used with and without scaling, to stop on NaN losses).
bool allFinite(const std::vector<torch::Tensor>& grads);

}  // namespace sdtune::train
