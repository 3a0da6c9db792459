#include "nn/linear.h"

#include "nn/frozen_conv.h"
#include "nn/frozen_linear.h"
#include "nn/lora_types.h"

#include <cmath>

namespace sdtune::nn {

namespace F = torch::nn::functional;

torch::Tensor applyAdapters(const std::map<std::string, LoraAdapter>& adapters, const torch::Tensor& x, torch::Tensor y,
                            bool training, const Conv2dOptions* conv, const torch::Tensor& weight,
                            const torch::Tensor& bias) {
  const at::ScalarType outType = y.scalar_type();
  for (const auto& [name, a] : adapters) {
    if (!a.enabled || a.fused || a.multiplier == 0.0) continue;
    if (a.type != AdapterType::Lora) {
      y = y + lora::typedOutput(a, x, y, {training, conv, weight, bias});
      continue;
    }
    torch::Tensor h = x.to(a.down.scalar_type());
    if (a.dropout > 0.0) h = F::dropout(h, F::DropoutFuncOptions().p(a.dropout).training(training));
    if (conv) {
      // down carries the layer's kernel, stride and padding; up is a 1x1 conv.
      h = F::conv2d(h, a.down, F::Conv2dFuncOptions().stride(conv->stride()).padding(conv->padding()));
      h = F::conv2d(h, a.up);
    } else if (h.dim() >= 2 && y.scalar_type() == a.up.scalar_type() && y.size(-1) == a.up.size(0)) {
      // y + scale * (down(x) @ up^T) as one addmm (beta 1, alpha scale): no separate passes
      // over the [tokens, out] product for the scale and the sum, forward or backward.
      torch::Tensor d = F::linear(h, a.down);
      torch::Tensor d2 = d.reshape({-1, d.size(-1)});
      y = at::addmm(y.reshape({-1, y.size(-1)}), d2, a.up.t(), 1.0, a.scale()).view(y.sizes());
      continue;
    } else {
      h = F::linear(F::linear(h, a.down), a.up);
    }
    y = y + h * a.scale();  // half + float32 promotes to float32, as in peft
  }
  return y.scalar_type() == outType ? y : y.to(outType);
}

namespace {
thread_local bool skipInit = false;
}  // namespace

SkipInitGuard::SkipInitGuard() : previous_(skipInit) {
  skipInit = true;
}

SkipInitGuard::~SkipInitGuard() {
  skipInit = previous_;
}

bool SkipInitGuard::active() {
  return skipInit;
}

LinearImpl::LinearImpl(const LinearOptions& options_) : options(options_) {
  reset();
}

void LinearImpl::reset() {
  weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) bias = register_parameter("bias", torch::empty({options.out_features()}));
  if (SkipInitGuard::active()) return;
  // torch.nn.Linear's init, so freshly built models (tests, the demo) look like real ones.
  torch::NoGradGuard noGrad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    double bound = 1.0 / std::sqrt(static_cast<double>(options.in_features()));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = frozenLinearApplies(x, weight, bias) ? frozenLinear(x, weight, bias) : F::linear(x, weight, bias);
  if (!hasLiveAdapters()) return y;
  return applyAdapters(adapters_, x, y, is_training(), nullptr, weight, bias);
}

Conv2dImpl::Conv2dImpl(const Conv2dOptions& options_) : options(options_) {
  reset();
}

void Conv2dImpl::reset() {
  int64_t k = options.kernel_size();
  weight = register_parameter("weight", torch::empty({options.out_channels(), options.in_channels(), k, k}));
  if (options.bias()) bias = register_parameter("bias", torch::empty({options.out_channels()}));
  if (SkipInitGuard::active()) return;
  torch::NoGradGuard noGrad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    double bound = 1.0 / std::sqrt(static_cast<double>(options.in_channels() * k * k));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) {
  const ConvGeometry geometry{options.kernel_size(), options.stride(), options.padding()};
  torch::Tensor y =
      frozenConvApplies(x, weight, bias, geometry)
          ? frozenConv2d(x, weight, bias, geometry)
          : F::conv2d(x, weight, F::Conv2dFuncOptions().bias(bias).stride(options.stride()).padding(options.padding()));
  if (!hasLiveAdapters()) return y;
  return applyAdapters(adapters_, x, y, is_training(), &options, weight, bias);
}

}  // namespace sdtune::nn
