// Prodigy as prodigyopt.Prodigy (konstmish/prodigy) computes it: Adam whose step
// size d is estimated from the distance travelled from the initial weights
// (D-adaptation); the lr multiplies d (1.0 typical).
#pragma once

#include "train/optimizer.h"

namespace sdtune::train {

class Prodigy : public Optimizer {
 public:
  Prodigy(NamedTensorList params, ProdigyOptions options);

 protected:
  void update(double lr, const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& grads) override;
  // "<name>.exp_avg" (beta1 > 0), "<name>.exp_avg_sq", "<name>.s", "<name>.p0", and the
  // scalars "__prodigy__" = float64 [d, d_max, d_numerator, k].
  void saveState(NamedTensorList& out) const override;
  void loadState(const StateReader& in) override;

 private:
  torch::Tensor sliced(const torch::Tensor& t) const;
  // The first pass: moment updates and the sums that estimate d. False when no gradient counted.
  bool accumulate(double lr, double dlr, const std::vector<torch::Tensor>& weights,
                  const std::vector<torch::Tensor>& grads, double& deltaNumerator, double& dDenom);

  std::vector<torch::Tensor> expAvg_, expAvgSq_, s_, p0_;
  std::vector<bool> started_;  // p0 taken (at a parameter's first gradient, as the reference does)
  ProdigyOptions options_;
  double d_, dMax_, dNumerator_ = 0.0;
  int64_t k_ = 0;  // steps that reached the update (the reference's group["k"])
};

}  // namespace sdtune::train
