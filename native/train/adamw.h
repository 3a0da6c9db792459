// AdamW as torch.optim.AdamW computes it (decoupled weight decay, bias
// correction), with float32 master weights for half-precision parameters and a
// state that saves to / loads from named tensors for exact resume.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace sdtune::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weightDecay = 1e-2;
};

class AdamW {
 public:
  // `params` are updated in place; names key the saved state. Half/bfloat16
  // parameters get a float32 master copy that the update runs on.
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, AdamWOptions options);

  // One update with learning rate `lr` from each parameter's .grad() (or `grads` when given,
  // in parameter order). Parameters without a gradient are skipped (as torch does).
  void step(double lr, const std::vector<torch::Tensor>& grads = {});
  void zeroGrad();

  int64_t stepCount() const { return step_; }
  const std::vector<std::pair<std::string, torch::Tensor>>& params() const { return params_; }

  // "<name>.exp_avg", "<name>.exp_avg_sq", "<name>.master" (half params), "__step__".
  std::vector<std::pair<std::string, torch::Tensor>> stateDict() const;
  // Restores a stateDict(); every name must match (clear error otherwise).
  void loadStateDict(const std::map<std::string, torch::Tensor>& state);

 private:
  struct Slot {
    torch::Tensor expAvg, expAvgSq, master;  // float32, parameter-shaped
  };
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// torch.nn.utils.clip_grad_norm_: scales grads in place so their total L2 norm is
// at most maxNorm; returns the norm before clipping. maxNorm <= 0 only measures.
double clipGradNorm(const std::vector<torch::Tensor>& grads, double maxNorm);

}  // namespace sdtune::train
