// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias correction).
#pragma once

#include "train/optimizer.h"

namespace sdtune::train {

class AdamW : public Optimizer {
 public:
  AdamW(NamedTensorList params, AdamWOptions options);

 protected:
  void update(double lr, const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& grads) override;
  // "<name>.exp_avg", "<name>.exp_avg_sq".
  void saveState(NamedTensorList& out) const override;
  void loadState(const StateReader& in) override;

 private:
  std::vector<torch::Tensor> expAvg_, expAvgSq_;  // float32, parameter-shaped
  AdamWOptions options_;
};

}  // namespace sdtune::train
