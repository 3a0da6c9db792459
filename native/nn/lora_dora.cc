// DoRA as peft defines it (peft/tuners/lora/dora.py: DoraLinearLayer, DoraConv2dLayer; merge in
// layer.py). The magnitude is per output channel; the norm of W + s B A is taken per output
// channel and detached from the graph (the DoRA paper, section 4.3).
#include "nn/lora_types.h"

namespace sdtune::nn::lora {

namespace F = torch::nn::functional;

namespace {

// ||W + s * up @ down|| per output channel, [out]; no gradient.
torch::Tensor rowNorm(const torch::Tensor& weight, const torch::Tensor& down, const torch::Tensor& up, double s) {
  torch::NoGradGuard noGrad;
  torch::Tensor w = weight.detach().to(at::kFloat).flatten(1);
  torch::Tensor lw = up.detach().to(at::kFloat).flatten(1).matmul(down.detach().to(at::kFloat).flatten(1));
  return (w + lw.to(w.device()) * s).norm(2, {1});
}

double scaling(const LoraAdapter& a) {
  return a.alpha / static_cast<double>(a.rank());
}

}  // namespace

torch::Tensor doraMagnitude(const torch::Tensor& weight, const torch::Tensor& down, const torch::Tensor& up,
                            const DoraOptions& options) {
  return rowNorm(weight, down, up, options.scaling);
}

torch::Tensor doraOutput(const LoraAdapter& a, const torch::Tensor& x, const torch::Tensor& y,
                         const LayerContext& layer) {
  const double s = scaling(a);
  torch::Tensor h = x.to(a.down.scalar_type());
  const bool drop = a.dropout > 0.0 && layer.training;
  if (drop) h = F::dropout(h, F::DropoutFuncOptions().p(a.dropout).training(true));
  torch::Tensor mag = a.factors.at("magnitude") / rowNorm(layer.weight, a.down, a.up, s);  // [out]
  torch::Tensor w = layer.weight.detach().to(h.scalar_type());
  torch::Tensor base, lora;
  if (layer.conv) {
    auto opts = F::Conv2dFuncOptions().stride(layer.conv->stride()).padding(layer.conv->padding());
    // peft: with dropout the base term is recomputed from the dropped-out input, without bias.
    base = drop ? F::conv2d(h, w, opts) : y.to(h.scalar_type());
    if (!drop && layer.bias.defined()) base = base - layer.bias.to(h.scalar_type()).view({1, -1, 1, 1});
    lora = F::conv2d(F::conv2d(h, a.down, opts), a.up);
    mag = mag.view({1, -1, 1, 1});
  } else {
    base = drop ? F::linear(h, w) : y.to(h.scalar_type());
    if (!drop && layer.bias.defined()) base = base - layer.bias.to(h.scalar_type());
    lora = F::linear(F::linear(h, a.down), a.up);
  }
  return ((mag - 1) * base + mag * lora * s) * a.multiplier;
}

torch::Tensor doraDelta(const LoraAdapter& a, const torch::Tensor& weight, double strength) {
  torch::NoGradGuard noGrad;
  const double s = scaling(a);
  torch::Tensor w = weight.detach().to(at::kFloat);
  torch::Tensor lw = a.up.detach().to(at::kFloat).flatten(1).matmul(a.down.detach().to(at::kFloat).flatten(1));
  torch::Tensor merged = w + lw.view(w.sizes()) * s;
  std::vector<int64_t> column(w.dim(), 1);
  column[0] = w.size(0);
  torch::Tensor factor =
      (a.factors.at("magnitude").detach().to(at::kFloat) / merged.flatten(1).norm(2, {1})).view(column);
  // peft's merged weight factor * (W + dW); a strength other than 1 interpolates towards it (ComfyUI).
  return (factor * merged - w) * strength;
}

}  // namespace sdtune::nn::lora
