// What every optimizer of training shares: named parameters updated in place,
// float32 master copies for half-precision parameters, a step count, and a state
// that saves to / loads from named tensors for exact resume. Each optimizer
// (adamw.h, prodigy.h, adafactor.h, lion.h) supplies its update and its state.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "train/optimizer_options.h"

namespace sdtune::train {

using NamedTensorList = std::vector<std::pair<std::string, torch::Tensor>>;

// Reads a saved state back: every key must exist with the shape expected.
class StateReader {
 public:
  explicit StateReader(const std::map<std::string, torch::Tensor>& state) : state_(state) {}
  // A copy of `key` in the dtype and device of `like`, whose shape it must have.
  torch::Tensor take(const std::string& key, const torch::Tensor& like) const;
  const torch::Tensor& raw(const std::string& key) const;

 private:
  const std::map<std::string, torch::Tensor>& state_;
};

class Optimizer {
 public:
  // `params` are updated in place; names key the saved state. Half/bfloat16
  // parameters get a float32 master copy that the update runs on.
  explicit Optimizer(NamedTensorList params);
  virtual ~Optimizer() = default;

  // One update with learning rate `lr` from each parameter's .grad() (or `grads` when given,
  // in parameter order). Parameters without a gradient are skipped (as torch does).
  void step(double lr, const std::vector<torch::Tensor>& grads = {});
  void zeroGrad();

  int64_t stepCount() const { return step_; }
  const NamedTensorList& params() const { return params_; }

  // The optimizer's own keys ("<name>.exp_avg", ...), "<name>.master" (half params), "__step__".
  NamedTensorList stateDict() const;
  // Restores a stateDict(); every name must match (clear error otherwise).
  void loadStateDict(const std::map<std::string, torch::Tensor>& state);

 protected:
  // One update of the float32 `weights` (master copies or the parameters) from float32
  // `grads` (undefined: no gradient, skip); stepCount() already counts this step.
  virtual void update(double lr, const std::vector<torch::Tensor>& weights,
                      const std::vector<torch::Tensor>& grads) = 0;
  virtual void saveState(NamedTensorList& out) const = 0;
  virtual void loadState(const StateReader& in) = 0;
  const std::string& name(size_t i) const { return params_[i].first; }
  // float32 zeros shaped like parameter i.
  torch::Tensor zerosLike(size_t i) const;

 private:
  NamedTensorList params_;
  std::vector<torch::Tensor> masters_;  // float32 copies of half parameters (undefined for float32 ones)
  int64_t step_ = 0;
};

// The optimizer `options.kind` names, over `params`.
std::unique_ptr<Optimizer> makeOptimizer(NamedTensorList params, const OptimizerOptions& options);

// torch.nn.utils.clip_grad_norm_: scales grads in place so their total L2 norm is
// at most maxNorm; returns the norm before clipping. maxNorm <= 0 only measures.
double clipGradNorm(const std::vector<torch::Tensor>& grads, double maxNorm);

}  // namespace sdtune::train
