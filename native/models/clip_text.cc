#include "models/clip_text.h"

#include <stdexcept>

namespace sdtune::models {

namespace {

std::string shapeText(at::IntArrayRef sizes) {
  return c10::str(sizes);
}

}  // namespace

void CLIPTextOptions::validate(const std::string& what) const {
  encoder.validate(what);
  if (vocabSize <= 0) {
    throw std::invalid_argument(what + ".vocab_size must be a positive integer (got " + std::to_string(vocabSize) +
                                ")");
  }
  if (maxPositionEmbeddings <= 0) {
    throw std::invalid_argument(what + ".max_position_embeddings must be a positive integer (got " +
                                std::to_string(maxPositionEmbeddings) + ")");
  }
}

torch::Tensor clipTextAttentionMask(int64_t length, const torch::Tensor& attentionMask, at::ScalarType dtype,
                                    at::Device device) {
  const double masked = finfoMin(dtype);
  auto options = torch::TensorOptions().dtype(dtype).device(device);
  torch::Tensor mask = torch::full({length, length}, masked, options).triu(1).view({1, 1, length, length});
  if (!attentionMask.defined()) return mask;
  const int64_t B = attentionMask.size(0);
  torch::Tensor padded = (attentionMask.to(device) == 0).view({B, 1, 1, length});  // [B, 1, 1, L]
  torch::Tensor pad = torch::zeros({B, 1, 1, length}, options).masked_fill(padded, masked);
  // transformers adds the two masks to the scores one after the other; where both mask a
  // key the sum overflows to -inf. Clamping keeps it finite and gives the same softmax.
  return (mask + pad).clamp_min(masked);  // [B, 1, L, L]
}

torch::Tensor clipPooledIndex(const torch::Tensor& inputIds, int64_t eosTokenId) {
  torch::Tensor ids = inputIds.to(torch::kInt);
  // argmax returns the first maximal position, as in transformers.
  if (eosTokenId == 2) return ids.argmax(-1);             // legacy: the end-of-text id is the largest id
  return (ids == eosTokenId).to(torch::kInt).argmax(-1);  // first end-of-text (0 when absent)
}

// ---------------------------------------------------------------- embeddings

CLIPTextEmbeddingsImpl::CLIPTextEmbeddingsImpl(const CLIPTextOptions& o) {
  const int64_t D = o.encoder.hiddenSize;
  token_embedding = register_module("token_embedding", torch::nn::Embedding(o.vocabSize, D));
  position_embedding = register_module("position_embedding", torch::nn::Embedding(o.maxPositionEmbeddings, D));
}

torch::Tensor CLIPTextEmbeddingsImpl::forward(const torch::Tensor& ids) {
  const int64_t L = ids.size(1);
  torch::Tensor tokens = token_embedding->forward(ids);                 // [B, L, D]
  torch::Tensor positions = position_embedding->weight.slice(0, 0, L);  // [L, D] = positions 0..L-1
  return tokens + positions;
}

// ---------------------------------------------------------------- transformer

CLIPTextTransformerImpl::CLIPTextTransformerImpl(const CLIPTextOptions& o) : options_(o) {
  o.validate();
  embeddings = register_module("embeddings", CLIPTextEmbeddings(o));
  encoder = register_module("encoder", CLIPEncoder(o.encoder));
  final_layer_norm = register_module(
      "final_layer_norm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.encoder.hiddenSize}).eps(o.encoder.layerNormEps)));
}

void CLIPTextTransformerImpl::checkInputs(const torch::Tensor& ids, const CLIPTextForwardOptions& o) const {
  if (ids.dim() != 2)
    throw std::invalid_argument("inputIds must be [batch, length] (got " + shapeText(ids.sizes()) + ")");
  if (ids.scalar_type() != torch::kLong && ids.scalar_type() != torch::kInt) {
    throw std::invalid_argument("inputIds must be int64 (got " + std::string(c10::toString(ids.scalar_type())) + ")");
  }
  const int64_t L = ids.size(1);
  if (ids.size(0) == 0 || L == 0) throw std::invalid_argument("inputIds is empty " + shapeText(ids.sizes()));
  if (L > options_.maxPositionEmbeddings) {
    throw std::invalid_argument("inputIds has " + std::to_string(L) +
                                " tokens per row, more than max_position_embeddings " +
                                std::to_string(options_.maxPositionEmbeddings) + "; truncate (or chunk) the prompt");
  }
  int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= options_.vocabSize) {
    throw std::invalid_argument("inputIds holds token id " + std::to_string(lo < 0 ? lo : hi) + " outside [0, " +
                                std::to_string(options_.vocabSize) + ") (vocab_size)");
  }
  if (o.attentionMask.defined() && o.attentionMask.sizes() != ids.sizes()) {
    throw std::invalid_argument("attentionMask " + shapeText(o.attentionMask.sizes()) +
                                " must have the shape of inputIds " + shapeText(ids.sizes()));
  }
  const int64_t layers = options_.encoder.numHiddenLayers;
  if (o.clipSkip < 0 || o.clipSkip > layers) {
    throw std::invalid_argument("clipSkip " + std::to_string(o.clipSkip) + " is out of range [0, " +
                                std::to_string(layers) + "] (num_hidden_layers)");
  }
}

CLIPTextOutput CLIPTextTransformerImpl::forward(const torch::Tensor& inputIds, const CLIPTextForwardOptions& o) {
  checkInputs(inputIds, o);
  const at::ScalarType dtype = final_layer_norm->weight.scalar_type();
  const at::Device device = final_layer_norm->weight.device();
  torch::Tensor ids = inputIds.to(device, torch::kLong);  // [B, L]
  const int64_t L = ids.size(1), layers = options_.encoder.numHiddenLayers;

  torch::Tensor h = embeddings->forward(ids);  // [B, L, D]
  torch::Tensor mask = clipTextAttentionMask(L, o.attentionMask, dtype, device);

  CLIPTextOutput out;
  // With clip skip and no hidden states wanted, the last k layers would be computed for nothing.
  const int64_t run = (o.clipSkip > 0 && !o.outputHiddenStates) ? layers - o.clipSkip : layers;
  torch::Tensor top = encoder->forward(h, mask, run, o.outputHiddenStates ? &out.hiddenStates : nullptr);
  torch::Tensor chosen = o.clipSkip > 0 && o.outputHiddenStates ? out.hiddenStates.at(layers - o.clipSkip) : top;
  out.lastHiddenState = final_layer_norm->forward(chosen);  // [B, L, D]

  torch::Tensor rows = torch::arange(ids.size(0), torch::TensorOptions().dtype(torch::kLong).device(device));
  torch::Tensor cols = clipPooledIndex(ids, options_.eosTokenId).to(torch::kLong);
  out.pooledOutput = out.lastHiddenState.index({rows, cols});  // [B, D]
  return out;
}

CLIPTextModelImpl::CLIPTextModelImpl(const CLIPTextOptions& options) {
  text_model = register_module("text_model", CLIPTextTransformer(options));
}

}  // namespace sdtune::models
