// Exponential moving average of weights, as diffusers' EMAModel (training_utils.py):
// decay ramps up with the optimisation step, shadow -= (1 - decay) * (shadow - param).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace sdtune::train {

struct EmaOptions {
  double decay = 0.9999;
  double minDecay = 0.0;
  int64_t updateAfterStep = 0;
  bool useWarmup = false;
  double invGamma = 1.0;
  double power = 2.0 / 3.0;
};

class Ema {
 public:
  Ema(const std::vector<std::pair<std::string, torch::Tensor>>& params, EmaOptions options);
  // The decay diffusers uses at `optimizationStep` (1-based count of optimizer steps taken).
  double decayAt(int64_t optimizationStep) const;
  void update(const std::vector<std::pair<std::string, torch::Tensor>>& params, int64_t optimizationStep);
  // Copies the averaged weights into `params` (for saving or validation).
  void copyTo(const std::vector<std::pair<std::string, torch::Tensor>>& params) const;
  std::vector<std::pair<std::string, torch::Tensor>> stateDict() const;  // "<name>" -> shadow (float32)
  void loadStateDict(const std::map<std::string, torch::Tensor>& state);

 private:
  std::vector<std::pair<std::string, torch::Tensor>> shadow_;
  EmaOptions options_;
};

}  // namespace sdtune::train
