#include "models/clip_vision.h"

#include <stdexcept>

namespace sdtune::models {

void CLIPVisionOptions::validate(const std::string& what) const {
  encoder.validate(what);
  auto positive = [&](const char* field, int64_t v) {
    if (v <= 0)
      throw std::invalid_argument(what + "." + field + " must be a positive integer (got " + std::to_string(v) + ")");
  };
  positive("num_channels", numChannels);
  positive("image_size", imageSize);
  positive("patch_size", patchSize);
  if (patchSize > imageSize) {
    throw std::invalid_argument(what + ".patch_size " + std::to_string(patchSize) + " is larger than image_size " +
                                std::to_string(imageSize));
  }
}

// ---------------------------------------------------------------- embeddings

CLIPVisionEmbeddingsImpl::CLIPVisionEmbeddingsImpl(const CLIPVisionOptions& o) {
  const int64_t D = o.encoder.hiddenSize;
  class_embedding = register_parameter("class_embedding", torch::randn({D}));
  patch_embedding = register_module(
      "patch_embedding", nn::Conv2d(nn::Conv2dOptions(o.numChannels, D, o.patchSize).stride(o.patchSize).bias(false)));
  position_embedding = register_module("position_embedding", torch::nn::Embedding(o.numPatches() + 1, D));
}

torch::Tensor CLIPVisionEmbeddingsImpl::forward(const torch::Tensor& pixels) {
  const int64_t B = pixels.size(0);
  torch::Tensor patches = patch_embedding->forward(pixels.to(patch_embedding->weight.scalar_type()));  // [B, D, g, g]
  patches = patches.flatten(2).transpose(1, 2);                                                        // [B, g*g, D]
  torch::Tensor cls = class_embedding.view({1, 1, -1}).expand({B, 1, -1});                             // [B, 1, D]
  torch::Tensor tokens = torch::cat({cls, patches}, 1);  // [B, 1 + g*g, D]
  return tokens + position_embedding->weight;            // + [1 + g*g, D]
}

// ---------------------------------------------------------------- transformer

CLIPVisionTransformerImpl::CLIPVisionTransformerImpl(const CLIPVisionOptions& o) : options_(o) {
  o.validate();
  auto norm = [&] {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.encoder.hiddenSize}).eps(o.encoder.layerNormEps));
  };
  embeddings = register_module("embeddings", CLIPVisionEmbeddings(o));
  pre_layrnorm = register_module("pre_layrnorm", norm());
  encoder = register_module("encoder", CLIPEncoder(o.encoder));
  post_layernorm = register_module("post_layernorm", norm());
}

CLIPVisionOutput CLIPVisionTransformerImpl::forward(const torch::Tensor& pixelValues) {
  const int64_t S = options_.imageSize, C = options_.numChannels;
  if (pixelValues.dim() != 4 || pixelValues.size(1) != C || pixelValues.size(2) != S || pixelValues.size(3) != S ||
      pixelValues.size(0) == 0) {
    throw std::invalid_argument("pixelValues must be [batch, " + std::to_string(C) + ", " + std::to_string(S) + ", " +
                                std::to_string(S) + "] (vision_config image_size " + std::to_string(S) + "); got " +
                                c10::str(pixelValues.sizes()));
  }
  if (!at::isFloatingType(pixelValues.scalar_type())) {
    throw std::invalid_argument("pixelValues must be a floating tensor (got " +
                                std::string(c10::toString(pixelValues.scalar_type())) + ")");
  }
  torch::Tensor pixels = pixelValues.to(post_layernorm->weight.device());
  torch::Tensor h = pre_layrnorm->forward(embeddings->forward(pixels));  // [B, T, D]
  CLIPVisionOutput out;
  out.lastHiddenState = encoder->forward(h, torch::Tensor());                    // [B, T, D], no mask
  out.pooledOutput = post_layernorm->forward(out.lastHiddenState.select(1, 0));  // [B, D], class token
  return out;
}

}  // namespace sdtune::models
