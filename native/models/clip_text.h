// CLIP's text tower (transformers CLIPTextModel, v4.39): token + position
// embeddings, a causal pre-LN encoder, a final LayerNorm, and the pooled row at
// the end-of-text token. Stable Diffusion's text encoder is exactly this model.
// Checkpoint keys: text_model.embeddings.token_embedding.weight,
// text_model.embeddings.position_embedding.weight, text_model.encoder.layers.N.*,
// text_model.final_layer_norm.*.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/clip_encoder.h"

namespace sdtune::models {

// CLIPTextConfig.
struct CLIPTextOptions {
  CLIPEncoderOptions encoder;
  int64_t vocabSize = 49408;
  int64_t maxPositionEmbeddings = 77;
  // 2 in configs written before transformers#24773: the pooled row is then argmax(input_ids).
  int64_t eosTokenId = 49407;

  void validate(const std::string& what = "text_config") const;
};

struct CLIPTextForwardOptions {
  torch::Tensor attentionMask;  // [B, L], 1 = token, 0 = padding; undefined = attend to all (causally)
  bool outputHiddenStates = false;
  // k > 0: lastHiddenState = final_layer_norm(hidden_states[-(k+1)]), as diffusers' encode_prompt(clip_skip=k).
  int64_t clipSkip = 0;
};

struct CLIPTextOutput {
  torch::Tensor lastHiddenState;            // [B, L, D], after final_layer_norm
  std::vector<torch::Tensor> hiddenStates;  // layers + 1 of [B, L, D] (no final LN); empty unless asked
  torch::Tensor pooledOutput;               // [B, D]: lastHiddenState at the end-of-text token
};

class CLIPTextEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit CLIPTextEmbeddingsImpl(const CLIPTextOptions& options);
  // ids: [B, L] integer -> [B, L, D]
  torch::Tensor forward(const torch::Tensor& ids);

  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
};
TORCH_MODULE(CLIPTextEmbeddings);

class CLIPTextTransformerImpl : public torch::nn::Module {
 public:
  explicit CLIPTextTransformerImpl(const CLIPTextOptions& options);
  CLIPTextOutput forward(const torch::Tensor& inputIds, const CLIPTextForwardOptions& options = {});

  const CLIPTextOptions& options() const { return options_; }

  CLIPTextEmbeddings embeddings{nullptr};
  CLIPEncoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};

 private:
  void checkInputs(const torch::Tensor& inputIds, const CLIPTextForwardOptions& options) const;
  CLIPTextOptions options_;
};
TORCH_MODULE(CLIPTextTransformer);

// The root of a CLIPTextModel checkpoint: everything under "text_model.".
class CLIPTextModelImpl : public torch::nn::Module {
 public:
  explicit CLIPTextModelImpl(const CLIPTextOptions& options);
  CLIPTextOutput forward(const torch::Tensor& inputIds, const CLIPTextForwardOptions& options = {}) {
    return text_model->forward(inputIds, options);
  }
  void setGradientCheckpointing(bool on) { text_model->encoder->gradientCheckpointing = on; }
  bool gradientCheckpointing() const { return text_model->encoder->gradientCheckpointing; }

  CLIPTextTransformer text_model{nullptr};
};
TORCH_MODULE(CLIPTextModel);

// The additive mask of the text tower: causal (finfo(dtype).min above the diagonal),
// plus finfo.min at padded keys when attentionMask is given. [1|B, 1, L, L].
torch::Tensor clipTextAttentionMask(int64_t length, const torch::Tensor& attentionMask, at::ScalarType dtype,
                                    at::Device device);

// The row of each sequence that the pooled output takes: argmax(ids) when eosTokenId == 2
// (legacy configs), otherwise the first position holding eosTokenId. ids: [B, L] -> [B].
torch::Tensor clipPooledIndex(const torch::Tensor& inputIds, int64_t eosTokenId);

}  // namespace sdtune::models
