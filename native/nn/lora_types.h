// The adapter types beyond plain LoRA, each as its reference defines it:
// - DoRA (peft, use_dora=True): y = base + (m / ||W + s B A|| - 1) * (W x) + m / ||W + s B A|| * s * B A x,
//   the norm per output channel and detached (DoRA paper 4.3); m starts as that norm. A scale
//   other than 1 interpolates the weight as ComfyUI's strength does: W + scale * (W_dora - W).
// - LoHa (LyCORIS): delta W = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank (Hadamard product),
//   a conv's factors flattened to [out, r] / [r, in * kh * kw] as LyCORIS' module keeps them.
// - LoKr (LyCORIS): delta W = kron(w1, w2) * alpha / rank, each factor full or a product of two,
//   split by LyCORIS' factorization(); two full factors have scale 1.
// Each is applied (forward) as its weight delta (LoHa, LoKr) or by peft's formula (DoRA);
// fusing adds the same delta; gradients come from autograd through those formulas.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>

#include "nn/linear.h"

namespace sdtune::nn::lora {

// What forward needs of the layer.
struct LayerContext {
  bool training = false;
  const Conv2dOptions* conv = nullptr;  // null: a Linear
  const torch::Tensor& weight;
  const torch::Tensor& bias;
};

// The output a non-LoRA adapter adds to y (float32; multiplier included).
torch::Tensor typedOutput(const LoraAdapter& a, const torch::Tensor& x, const torch::Tensor& y,
                          const LayerContext& layer);

// The float32 delta fuse adds to `weight` for adapter `a` (any type), its multiplier and
// fuseScale included.
torch::Tensor adapterDelta(const LoraAdapter& a, const torch::Tensor& weight, double fuseScale);

// Checks LoHa / LoKr factors (or a DoRA magnitude) against a layer weight of `shape`; returns ""
// when they fit (and sets dim), else what does not fit.
std::string typedMisfit(AdapterType type, const std::map<std::string, torch::Tensor>& factors, at::IntArrayRef shape,
                        int64_t& dim);

// Parsing "lora" / "dora" / "loha" / "lokr" and back.
AdapterType parseAdapterType(const std::string& name);
std::string adapterTypeName(AdapterType type);

// torch.nn.init.kaiming_uniform_(t, a=sqrt(5)) from `gen` (lora.cc).
void kaimingUniform(torch::Tensor& t, at::Generator gen);
// Throws one std::invalid_argument listing `problems` under `title` (the first 40, then a count).
[[noreturn]] void fail(const std::string& title, const std::vector<std::string>& problems);

// ---- LoHa (lora_loha.cc)

struct LohaOptions {
  int64_t rank = 4;
};
// LyCORIS' LohaModule init, in its draw order: w1_b ~ N(0, 1), w1_a ~ N(0, 0.1), w2_b ~ N(0, 1), w2_a = 0.
std::map<std::string, torch::Tensor> createLoha(at::IntArrayRef shape, const LohaOptions& options, at::Generator gen);
torch::Tensor lohaWeight(const std::map<std::string, torch::Tensor>& f, at::IntArrayRef shape);  // unscaled
std::string lohaMisfit(const std::map<std::string, torch::Tensor>& f, at::IntArrayRef shape, int64_t& dim);

// ---- LoKr (lora_lokr.cc)

struct LokrOptions {
  int64_t rank = 4;
  int64_t factor = -1;         // LyCORIS' factor: -1 splits each dimension as evenly as it can
  bool decomposeBoth = false;  // also write w1 as a low-rank product when small enough
};
// LyCORIS' LokrModule shapes and init (no tucker, no full_matrix): w2 (or w2_a, w2_b) first, then w1.
std::map<std::string, torch::Tensor> createLokr(at::IntArrayRef shape, const LokrOptions& options, at::Generator gen);
torch::Tensor lokrWeight(const std::map<std::string, torch::Tensor>& f, at::IntArrayRef shape);  // unscaled
std::string lokrMisfit(const std::map<std::string, torch::Tensor>& f, at::IntArrayRef shape, int64_t& dim);
// LyCORIS' factorization(dimension, factor): (m, n), m <= n, m * n = dimension.
std::pair<int64_t, int64_t> lokrFactorization(int64_t dimension, int64_t factor);

// ---- DoRA (lora_dora.cc)

struct DoraOptions {
  double scaling = 1.0;  // alpha / rank
};
// peft's magnitude init: ||W + scaling * up @ down|| per output channel, [out].
torch::Tensor doraMagnitude(const torch::Tensor& weight, const torch::Tensor& down, const torch::Tensor& up,
                            const DoraOptions& options);
torch::Tensor doraOutput(const LoraAdapter& a, const torch::Tensor& x, const torch::Tensor& y,
                         const LayerContext& layer);
torch::Tensor doraDelta(const LoraAdapter& a, const torch::Tensor& weight, double strength);

}  // namespace sdtune::nn::lora
