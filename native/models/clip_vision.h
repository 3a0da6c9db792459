// CLIP's vision tower (transformers CLIPVisionTransformer, v4.39): a ViT with a
// class token, a LayerNorm before the encoder ("pre_layrnorm", sic, as the
// checkpoint spells it) and one after it on the class token only.
// Checkpoint keys: vision_model.embeddings.{class_embedding, patch_embedding.weight,
// position_embedding.weight}, vision_model.pre_layrnorm.*, vision_model.encoder.layers.N.*,
// vision_model.post_layernorm.*.
#pragma once

#include <torch/torch.h>

#include <string>

#include "models/clip_encoder.h"
#include "nn/linear.h"

namespace sdtune::models {

// CLIPVisionConfig.
struct CLIPVisionOptions {
  CLIPEncoderOptions encoder;
  int64_t numChannels = 3;
  int64_t imageSize = 224;
  int64_t patchSize = 32;

  int64_t numPatches() const { return (imageSize / patchSize) * (imageSize / patchSize); }
  void validate(const std::string& what = "vision_config") const;
};

struct CLIPVisionOutput {
  torch::Tensor lastHiddenState;  // [B, 1 + patches, D] (no post LN)
  torch::Tensor pooledOutput;     // [B, D]: post_layernorm(class token)
};

class CLIPVisionEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit CLIPVisionEmbeddingsImpl(const CLIPVisionOptions& options);
  // pixels: [B, C, S, S] -> [B, 1 + patches, D]
  torch::Tensor forward(const torch::Tensor& pixels);

  torch::Tensor class_embedding;  // [D]
  nn::Conv2d patch_embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};
};
TORCH_MODULE(CLIPVisionEmbeddings);

class CLIPVisionTransformerImpl : public torch::nn::Module {
 public:
  explicit CLIPVisionTransformerImpl(const CLIPVisionOptions& options);
  CLIPVisionOutput forward(const torch::Tensor& pixelValues);

  const CLIPVisionOptions& options() const { return options_; }

  CLIPVisionEmbeddings embeddings{nullptr};
  torch::nn::LayerNorm pre_layrnorm{nullptr};
  CLIPEncoder encoder{nullptr};
  torch::nn::LayerNorm post_layernorm{nullptr};

 private:
  CLIPVisionOptions options_;
};
TORCH_MODULE(CLIPVisionTransformer);

}  // namespace sdtune::models
