// Linear and Conv2d layers that can carry LoRA adapters. Every model uses these
// instead of torch::nn::Linear/Conv2d, so adapters attach to any layer by path
// and the checkpoint keys stay "<path>.weight" / "<path>.bias".
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>

namespace sdtune::nn {

// The adapter types: plain LoRA; DoRA (peft's weight-decomposed LoRA: down/up plus a per-output
// magnitude); LoHa and LoKr (LyCORIS: a Hadamard / Kronecker product of factors). See nn/lora_types.h.
enum class AdapterType { Lora, Dora, Loha, Lokr };

// One adapter: delta(x) = alpha / rank * multiplier * up(down(dropout(x))) for LoRA; the other
// types in nn/lora_types.h.
// Managed through nn/lora.h (attach, create, scales, fuse); the layer only applies it.
struct LoraAdapter {
  torch::Tensor down;  // LoRA, DoRA. Linear: [rank, in];  Conv2d: [rank, in, kh, kw]
  torch::Tensor up;    // LoRA, DoRA. Linear: [out, rank]; Conv2d: [out, rank, 1, 1]
  double alpha = 1.0;
  double multiplier = 1.0;  // the user's runtime scale
  double dropout = 0.0;
  bool enabled = true;  // in the active set (diffusers' set_adapters)
  bool fused = false;   // already added into the base weight: forward skips it
  AdapterType type = AdapterType::Lora;
  // DoRA: "magnitude" [out]. LoHa: hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b. LoKr: lokr_w1 or
  // lokr_w1_a + lokr_w1_b, lokr_w2 or lokr_w2_a + lokr_w2_b (LyCORIS' names).
  std::map<std::string, torch::Tensor> factors;
  int64_t dim = 0;  // LoHa / LoKr rank (0: a LoKr of two full factors, scale 1 as in LyCORIS)

  int64_t rank() const { return down.defined() ? down.size(0) : dim; }
  // peft's / LyCORIS' scaling (alpha / rank) times the runtime scale, in that order.
  double scale() const {
    if (type == AdapterType::Lokr && dim == 0) return multiplier;
    return alpha / static_cast<double>(rank()) * multiplier;
  }
  // Whether its tensors are trainable leaves.
  bool trainable() const {
    if (down.defined()) return down.requires_grad();
    return !factors.empty() && factors.begin()->second.requires_grad();
  }
};

// Adapters by name, applied in name order (deterministic sums).
class AdaptableLayer {
 public:
  virtual ~AdaptableLayer() = default;
  std::map<std::string, LoraAdapter>& adapters() { return adapters_; }
  const std::map<std::string, LoraAdapter>& adapters() const { return adapters_; }
  virtual torch::Tensor& baseWeight() = 0;
  virtual bool isConv() const = 0;

  // Layer-wide switch (diffusers' disable_lora / enable_lora), independent of the active set.
  bool adaptersActive = true;
  // The base weight as it was before the first fuse (a CPU copy), so that unfuse restores
  // it bit for bit; undefined while nothing is fused into this layer.
  torch::Tensor unfusedWeight;

 protected:
  // Whether forward has adapter work to do.
  bool hasLiveAdapters() const { return adaptersActive && !adapters_.empty(); }
  std::map<std::string, LoraAdapter> adapters_;
};

// While one is alive on this thread, new Linear / Conv2d layers skip their random
// init: for models whose every weight is about to be read from a checkpoint (an
// SD UNet's init alone takes seconds and touches gigabytes).
class SkipInitGuard {
 public:
  SkipInitGuard();
  ~SkipInitGuard();
  SkipInitGuard(const SkipInitGuard&) = delete;
  SkipInitGuard& operator=(const SkipInitGuard&) = delete;
  static bool active();

 private:
  bool previous_;
};

struct LinearOptions {
  LinearOptions(int64_t in, int64_t out) : in_features_(in), out_features_(out) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
};

class LinearImpl : public torch::nn::Cloneable<LinearImpl>, public AdaptableLayer {
 public:
  explicit LinearImpl(const LinearOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor& baseWeight() override { return weight; }
  bool isConv() const override { return false; }

  LinearOptions options;
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined
};
TORCH_MODULE(Linear);

struct Conv2dOptions {
  Conv2dOptions(int64_t in, int64_t out, int64_t kernel) : in_channels_(in), out_channels_(out), kernel_size_(kernel) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, padding) = 0;
  TORCH_ARG(bool, bias) = true;
};

class Conv2dImpl : public torch::nn::Cloneable<Conv2dImpl>, public AdaptableLayer {
 public:
  explicit Conv2dImpl(const Conv2dOptions& options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor& baseWeight() override { return weight; }
  bool isConv() const override { return true; }

  Conv2dOptions options;
  torch::Tensor weight;  // [out, in, k, k]
  torch::Tensor bias;    // [out] or undefined
};
TORCH_MODULE(Conv2d);

// y plus every enabled, unfused adapter's output for input x. As peft: x is cast to the
// adapter weights' dtype (float32 over a half base), the sum is taken in the wider of the
// two dtypes, and the result is cast back to y's dtype once. weight / bias: the layer's
// (DoRA and LyCORIS adapters need them).
torch::Tensor applyAdapters(const std::map<std::string, LoraAdapter>& adapters, const torch::Tensor& x, torch::Tensor y,
                            bool training, const Conv2dOptions* conv, const torch::Tensor& weight,
                            const torch::Tensor& bias);

}  // namespace sdtune::nn
