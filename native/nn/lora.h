// LoRA adapters on a whole model: every nn::Linear / nn::Conv2d below a root module,
// addressed by its module path ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
// "text_model.encoder.layers.0.self_attn.q_proj"), which is also its checkpoint key
// without ".weight". Adapters are named, so several live side by side (diffusers'
// adapter_name); peft's semantics throughout (scaling = alpha / rank, init, merge).
//
// None of these functions lock anything: callers hold the model's mutex.
#pragma once

#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nn/linear.h"

namespace sdtune::nn::lora {

// One adaptable layer of a model.
struct Layer {
  std::string path;
  AdaptableLayer* layer = nullptr;
  std::shared_ptr<torch::nn::Module> module;  // keeps `layer` alive
};

// Every adaptable layer below `root`, in module (registration) order.
std::vector<Layer> adaptableLayers(torch::nn::Module& root);

// Every submodule: {path, kind}, kind "linear", "conv2d" or the C++ class name. For target matching.
std::vector<std::pair<std::string, std::string>> moduleKinds(torch::nn::Module& root);

// ---- attaching given weights (LoRA files)

struct AdapterWeights {
  std::string path;    // module path
  torch::Tensor down;  // [r, in] or [r, in, kh, kw] (LoRA, DoRA)
  torch::Tensor up;    // [out, r] or [out, r, 1, 1] (LoRA, DoRA)
  double alpha = 0;
  AdapterType type = AdapterType::Lora;
  std::map<std::string, torch::Tensor> factors;  // DoRA's magnitude, LoHa's / LoKr's factors (nn/lora_types.h)
};

struct AttachOptions {
  double multiplier = 1.0;
  double dropout = 0.0;
  bool trainable = false;  // float32 leaves with requires_grad (to continue training a LoRA)
  std::string keyPrefix;   // put before paths in errors ("unet.")
};

// Adds adapter `name` to each listed layer, copied to float32 on the layer's device.
// Everything is checked before anything changes; one error lists every path that names
// no adaptable layer and every shape that does not fit its layer (both shapes given).
// A Linear takes down [r, in] / up [out, r] (or those with trailing 1x1); a Conv2d
// down [r, in, kh, kw] (the layer's kernel; LoCon) / up [out, r, 1, 1] (or 2-D for 1x1).
void attach(torch::nn::Module& root, const std::string& name, const std::vector<AdapterWeights>& adapters,
            const AttachOptions& options);

// ---- creating trainable adapters

enum class Init {
  Gaussian,  // A ~ N(0, (1/r)^2), B = 0 (peft init_lora_weights="gaussian", diffusers' scripts)
  Kaiming,   // A = kaiming_uniform(a=sqrt(5)), B = 0 (peft's default, init_lora_weights=True)
  Random,    // A and B both kaiming_uniform(a=sqrt(5)) (peft init_lora_weights=False): non-zero output
};

struct CreateOptions {
  std::vector<std::string> paths;  // the target layers (already matched)
  int64_t rank = 4;
  double alpha = 4.0;
  double dropout = 0.0;
  double multiplier = 1.0;
  Init init = Init::Gaussian;  // LoRA and DoRA (LoHa and LoKr use LyCORIS' init)
  AdapterType type = AdapterType::Lora;
  int64_t factor = -1;         // LoKr: LyCORIS' factor
  bool decomposeBoth = false;  // LoKr: LyCORIS' decompose_both
  // Draws happen on the CPU in float32 from this generator (the global CPU one when
  // empty), layer by layer in module order, A before B, then move to the layer's device.
  std::optional<at::Generator> generator;
  std::string keyPrefix;
};

// Creates adapter `name` on each target; returns its parameters (see parameters()).
std::vector<std::pair<std::string, torch::Tensor>> create(torch::nn::Module& root, const std::string& name,
                                                          const CreateOptions& options);

// Adapter `name`'s tensors, named as peft names them: "<path>.lora_A.weight" (down) and
// "<path>.lora_B.weight" (up), DoRA's "<path>.lora_magnitude_vector", LoHa's / LoKr's
// "<path>.<LyCORIS factor name>", in module order. The live tensors, not copies: an optimizer
// updates them in place and their gradients land here.
std::vector<std::pair<std::string, torch::Tensor>> parameters(torch::nn::Module& root, const std::string& name);

// Copies of adapter `name`'s weights (detached), e.g. for saving as a LoRA file.
std::vector<AdapterWeights> extract(torch::nn::Module& root, const std::string& name);

// ---- several adapters

struct AdapterInfo {
  std::string name;
  int64_t layers = 0;
  int64_t minRank = 0, maxRank = 0;
  double multiplier = 1.0;
  bool enabled = true;
  int64_t fusedLayers = 0;
  bool trainable = false;
  std::string type = "lora";  // of its first layer
};

// Every adapter name on the model, sorted.
std::vector<AdapterInfo> list(torch::nn::Module& root);

// diffusers' set_adapters(names, weights): exactly these adapters are active, each with its
// multiplier; the others stay attached but inactive. Unknown names are an error. Fused
// adapters cannot change (unfuse first).
void setActive(torch::nn::Module& root, const std::vector<std::string>& names, const std::vector<double>& weights);

// diffusers' enable_lora / disable_lora: every adapter of the model on or off, keeping the active set.
void setEnabled(torch::nn::Module& root, bool enabled);

// Deletes adapter `name` from every layer (its tensors are freed when nothing else holds them).
// Returns the number of layers it was on; an unknown name is an error.
int64_t remove(torch::nn::Module& root, const std::string& name);

// ---- fusing into the base weights

struct FuseOptions {
  std::vector<std::string> names;  // empty: every active (enabled, unfused) adapter
  double scale = 1.0;              // diffusers' fuse_lora(lora_scale): times each multiplier
  // Fold in and delete the adapters, keeping no copy of the old weights (for merging into a
  // checkpoint); unfuse then cannot undo it.
  bool permanent = false;
};

// W <- W + sum_a scale * multiplier_a * alpha_a / rank_a * up_a @ down_a, summed in float32 and
// rounded to W's dtype once. Unless permanent, W's previous value is kept (CPU) and the
// adapters are marked fused (forward skips them). Returns the number of layers changed.
int64_t fuse(torch::nn::Module& root, const FuseOptions& options);

// Restores every fused layer's weight bit for bit and marks its adapters unfused again.
// Returns the number of layers restored.
int64_t unfuse(torch::nn::Module& root);

// The float32 weight delta (up @ down) * factor of one adapter, in the layer weight's shape
// (factor = scale() gives the adapter's effective delta at its current multiplier).
torch::Tensor delta(const LoraAdapter& adapter, at::IntArrayRef weightShape, double factor);

}  // namespace sdtune::nn::lora
