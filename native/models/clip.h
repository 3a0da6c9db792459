// CLIP as transformers defines it (v4.39): CLIPModel (text tower, vision tower,
// bias-free projections, logit_scale) and loaders for CLIPTextModel and CLIPModel
// safetensors checkpoints. The towers are in clip_text.h and clip_vision.h.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/clip_text.h"
#include "models/clip_vision.h"
#include "nn/linear.h"

namespace sdtune::models {

// CLIPConfig.
struct CLIPModelOptions {
  CLIPTextOptions text;
  CLIPVisionOptions vision;
  int64_t projectionDim = 512;
  double logitScaleInitValue = 2.6592;

  void validate() const;
};

// Root of a CLIPModel checkpoint: text_model.*, vision_model.*, text_projection.weight,
// visual_projection.weight, logit_scale.
class CLIPModelImpl : public torch::nn::Module {
 public:
  explicit CLIPModelImpl(const CLIPModelOptions& options);

  // text_projection of the pooled text output. ids/mask: [B, L] -> [B, projection_dim]
  torch::Tensor getTextFeatures(const torch::Tensor& inputIds, const torch::Tensor& attentionMask);
  // visual_projection of the post-LN class token. pixels: [B, C, S, S] -> [B, projection_dim]
  torch::Tensor getImageFeatures(const torch::Tensor& pixelValues);

  const CLIPModelOptions& options() const { return options_; }

  CLIPTextTransformer text_model{nullptr};
  CLIPVisionTransformer vision_model{nullptr};
  nn::Linear visual_projection{nullptr}, text_projection{nullptr};
  torch::Tensor logit_scale;  // 0-dim; logits use exp(logit_scale)

 private:
  CLIPModelOptions options_;
};
TORCH_MODULE(CLIPModel);

struct CLIPLoadOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // Checkpoint keys starting with one of these are skipped (e.g. "vision_model." when only
  // the text tower of a CLIPModel file is wanted). transformers' position_ids buffers always are.
  std::vector<std::string> ignorePrefixes;
  std::string what = "text_encoder";  // names the component in errors
};

// Builds the model, loads every tensor, freezes the parameters and puts it in eval mode.
CLIPTextModel loadCLIPTextModel(const CLIPTextOptions& options, const std::vector<std::string>& files,
                                const CLIPLoadOptions& load);
CLIPModel loadCLIPModel(const CLIPModelOptions& options, const std::vector<std::string>& files,
                        const CLIPLoadOptions& load);
// A seeded random init (libtorch's default layer init), frozen, in eval mode: tests and benchmarks.
CLIPTextModel randomCLIPTextModel(const CLIPTextOptions& options, uint64_t seed, const CLIPLoadOptions& load);

// Throws std::invalid_argument when this libtorch cannot run a transformer in `dtype` on
// `device` (libtorch 1.13 has no float16 matmul on the CPU), saying what to use instead.
void checkTransformerDtype(at::ScalarType dtype, at::Device device, const std::string& what);

}  // namespace sdtune::models
