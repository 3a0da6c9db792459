// Adafactor as transformers.optimization.Adafactor computes it: the second
// moment of a parameter with 2+ dimensions kept as row and column means (the
// last two dimensions), the update clipped by its RMS, and optionally a relative
// step size (relativeStep: the lr given to step() is then ignored) scaled by the
// parameter's RMS (scaleParameter).
#pragma once

#include "train/optimizer.h"

namespace sdtune::train {

class Adafactor : public Optimizer {
 public:
  Adafactor(NamedTensorList params, AdafactorOptions options);

 protected:
  void update(double lr, const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& grads) override;
  // "<name>.exp_avg" (with beta1), "<name>.exp_avg_sq_row" + "<name>.exp_avg_sq_col" (2+
  // dimensions) or "<name>.exp_avg_sq".
  void saveState(NamedTensorList& out) const override;
  void loadState(const StateReader& in) override;

 private:
  double stepSize(double lr, const torch::Tensor& weight) const;
  // The preconditioned gradient (before clipping), updating the second-moment state.
  torch::Tensor precondition(size_t i, const torch::Tensor& grad, double beta2t);

  std::vector<torch::Tensor> expAvg_, row_, col_, expAvgSq_;
  std::vector<bool> factored_;
  AdafactorOptions options_;
};

}  // namespace sdtune::train
