// Lion as lion_pytorch.Lion (lucidrains/lion-pytorch) computes it: the sign of an
// interpolation of momentum and gradient, with decoupled weight decay (lr * wd).
#pragma once

#include "train/optimizer.h"

namespace sdtune::train {

class Lion : public Optimizer {
 public:
  Lion(NamedTensorList params, LionOptions options);

 protected:
  void update(double lr, const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& grads) override;
  // "<name>.exp_avg".
  void saveState(NamedTensorList& out) const override;
  void loadState(const StateReader& in) override;

 private:
  std::vector<torch::Tensor> expAvg_;
  LionOptions options_;
};

}  // namespace sdtune::train
