// The transformer encoder shared by CLIP's text and vision towers, as
// transformers' modeling_clip.py (v4.39) builds it: pre-LN blocks of
// self-attention (q/k/v/out_proj with bias) and an MLP (fc1, activation, fc2).
// Module names are the checkpoint key names, so loading is a walk.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "nn/linear.h"
#include "train/recompute.h"

namespace sdtune::models {

// What CLIPTextConfig / CLIPVisionConfig say about one encoder.
struct CLIPEncoderOptions {
  int64_t hiddenSize = 512;
  int64_t intermediateSize = 2048;
  int64_t numHiddenLayers = 12;
  int64_t numAttentionHeads = 8;
  std::string hiddenAct = "quick_gelu";
  double layerNormEps = 1e-5;
  double attentionDropout = 0.0;

  // Throws std::invalid_argument naming the field (prefixed by `what`, e.g. "text_config") and its value.
  void validate(const std::string& what) const;
};

// transformers' ACT2FN names that CLIP configs use.
bool isSupportedClipActivation(const std::string& name);
torch::Tensor clipActivation(const std::string& name, const torch::Tensor& x);

class CLIPAttentionImpl : public torch::nn::Module {
 public:
  explicit CLIPAttentionImpl(const CLIPEncoderOptions& options);
  // x: [B, L, D]; mask: additive, broadcastable to [B, heads, L, L], or undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);

  nn::Linear k_proj{nullptr}, v_proj{nullptr}, q_proj{nullptr}, out_proj{nullptr};

 private:
  int64_t heads_;
  int64_t headDim_;
};
TORCH_MODULE(CLIPAttention);

class CLIPMLPImpl : public torch::nn::Module {
 public:
  explicit CLIPMLPImpl(const CLIPEncoderOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  std::string act_;
};
TORCH_MODULE(CLIPMLP);

class CLIPEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit CLIPEncoderLayerImpl(const CLIPEncoderOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);

  CLIPAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr};
  CLIPMLP mlp{nullptr};
  torch::nn::LayerNorm layer_norm2{nullptr};
};
TORCH_MODULE(CLIPEncoderLayer);

class CLIPEncoderImpl : public torch::nn::Module {
 public:
  explicit CLIPEncoderImpl(const CLIPEncoderOptions& options);

  // Runs the first `numLayers` layers (all when < 0). When `states` is given it
  // receives the input and every layer's output: states[0] = x, states[i] = layer i.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask, int64_t numLayers = -1,
                        std::vector<torch::Tensor>* states = nullptr);

  // Recompute each layer in backward instead of keeping its activations (same gradients).
  bool gradientCheckpointing = false;

  torch::nn::ModuleList layers{nullptr};
  std::vector<CLIPEncoderLayer> layerList;

 private:
  std::vector<train::BlockFn> checkpointFns_;  // layer i as a recompute block, built once
};
TORCH_MODULE(CLIPEncoder);

// The most negative finite value of a floating dtype (torch.finfo(dtype).min): the
// "masked" entry of transformers' additive attention masks.
double finfoMin(at::ScalarType dtype);

}  // namespace sdtune::models
