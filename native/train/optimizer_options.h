// The settings of each optimizer training can use, one struct per optimizer (as
// torch's nn/modules Options), with the defaults of its reference implementation.
#pragma once

#include <cstdint>
#include <limits>

namespace sdtune::train {

// torch.optim.AdamW.
struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weightDecay = 1e-2;
};

// prodigyopt.Prodigy (konstmish/prodigy): Adam with a D-adapted step size; lr scales it (1.0 typical).
struct ProdigyOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double beta3 = std::numeric_limits<double>::quiet_NaN();  // NaN: sqrt(beta2)
  double eps = 1e-8;
  double weightDecay = 0.0;
  bool decouple = true;  // AdamW-style weight decay; false: added to the gradient
  bool useBiasCorrection = false;
  bool safeguardWarmup = false;
  double d0 = 1e-6;
  double dCoef = 1.0;
  double growthRate = std::numeric_limits<double>::infinity();
  int64_t sliceP = 1;  // estimate D from every sliceP-th element
};

// transformers.optimization.Adafactor: factored second moment for parameters of 2+ dimensions.
struct AdafactorOptions {
  double eps1 = 1e-30;  // added to the squared gradient
  double eps2 = 1e-3;   // lower bound of the parameter scale
  double clipThreshold = 1.0;
  double decayRate = -0.8;
  double beta1 = std::numeric_limits<double>::quiet_NaN();  // NaN: no first moment
  double weightDecay = 0.0;
  bool scaleParameter = true;
  bool relativeStep = true;  // the step size is computed; the lr given to step() is ignored
  bool warmupInit = false;
};

// lion_pytorch.Lion (lucidrains/lion-pytorch): sign of an interpolated momentum.
struct LionOptions {
  double beta1 = 0.9;
  double beta2 = 0.99;
  double weightDecay = 0.0;
};

enum class OptimizerKind { AdamW, Prodigy, Adafactor, Lion };

// Which optimizer, with the settings of that one (the others are unused).
struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::AdamW;
  AdamWOptions adamw;
  ProdigyOptions prodigy;
  AdafactorOptions adafactor;
  LionOptions lion;
};

}  // namespace sdtune::train
