#include "models/clip_encoder.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "nn/attention_kernel.h"
#include "train/recompute.h"

namespace sdtune::models {

namespace {

std::string numberText(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

}  // namespace

void CLIPEncoderOptions::validate(const std::string& what) const {
  auto positive = [&](const char* field, int64_t v) {
    if (v <= 0)
      throw std::invalid_argument(what + "." + field + " must be a positive integer (got " + std::to_string(v) + ")");
  };
  positive("hidden_size", hiddenSize);
  positive("intermediate_size", intermediateSize);
  positive("num_hidden_layers", numHiddenLayers);
  positive("num_attention_heads", numAttentionHeads);
  if (hiddenSize % numAttentionHeads != 0) {
    throw std::invalid_argument(what + ".hidden_size " + std::to_string(hiddenSize) +
                                " is not divisible by num_attention_heads " + std::to_string(numAttentionHeads));
  }
  if (!isSupportedClipActivation(hiddenAct)) {
    throw std::invalid_argument(what + ".hidden_act \"" + hiddenAct +
                                "\" is not supported (expected gelu, quick_gelu, gelu_new, gelu_pytorch_tanh, "
                                "gelu_fast, relu, silu or swish)");
  }
  if (!(layerNormEps > 0) || !std::isfinite(layerNormEps)) {
    throw std::invalid_argument(what + ".layer_norm_eps must be a positive number (got " + numberText(layerNormEps) +
                                ")");
  }
  // Every released CLIP uses 0; a nonzero value would need dropout inside the attention kernel.
  if (attentionDropout != 0.0) {
    throw std::invalid_argument(what + ".attention_dropout " + numberText(attentionDropout) +
                                " is not supported (only 0.0)");
  }
}

bool isSupportedClipActivation(const std::string& name) {
  return name == "gelu" || name == "quick_gelu" || name == "gelu_new" || name == "gelu_pytorch_tanh" ||
         name == "gelu_fast" || name == "relu" || name == "silu" || name == "swish";
}

torch::Tensor clipActivation(const std::string& name, const torch::Tensor& x) {
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);  // OpenAI CLIP's approximation
  if (name == "gelu") return torch::gelu(x);                       // exact (erf)
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return torch::gelu(x, "tanh");
  if (name == "relu") return torch::relu(x);
  if (name == "silu" || name == "swish") return torch::silu(x);
  throw std::invalid_argument("unsupported hidden_act \"" + name + "\"");
}

double finfoMin(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return std::numeric_limits<float>::lowest();
    case at::kDouble: return std::numeric_limits<double>::lowest();
    case at::kHalf: return -65504.0;
    case at::kBFloat16: return -3.3895313892515355e38;
    default: throw std::invalid_argument("finfoMin: not a floating dtype: " + std::string(c10::toString(dtype)));
  }
}

// ---------------------------------------------------------------- attention

CLIPAttentionImpl::CLIPAttentionImpl(const CLIPEncoderOptions& o)
    : heads_(o.numAttentionHeads), headDim_(o.hiddenSize / o.numAttentionHeads) {
  // Registration order follows transformers (k, v, q, out) so named_parameters() lists them alike.
  k_proj = register_module("k_proj", nn::Linear(nn::LinearOptions(o.hiddenSize, o.hiddenSize)));
  v_proj = register_module("v_proj", nn::Linear(nn::LinearOptions(o.hiddenSize, o.hiddenSize)));
  q_proj = register_module("q_proj", nn::Linear(nn::LinearOptions(o.hiddenSize, o.hiddenSize)));
  out_proj = register_module("out_proj", nn::Linear(nn::LinearOptions(o.hiddenSize, o.hiddenSize)));
}

torch::Tensor CLIPAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  auto heads = [&](const torch::Tensor& t) { return t.view({B, L, heads_, headDim_}).transpose(1, 2); };
  torch::Tensor q = heads(q_proj->forward(x));  // [B, H, L, hd]
  torch::Tensor k = heads(k_proj->forward(x));  // [B, H, L, hd]
  torch::Tensor v = heads(v_proj->forward(x));  // [B, H, L, hd]
  double scale = 1.0 / std::sqrt(static_cast<double>(headDim_));
  torch::Tensor out = nn::attend(q, k, v, mask, scale);  // [B, H, L, hd]
  out = out.transpose(1, 2).reshape({B, L, D});          // [B, L, D]
  return out_proj->forward(out);
}

// ---------------------------------------------------------------- MLP

CLIPMLPImpl::CLIPMLPImpl(const CLIPEncoderOptions& o) : act_(o.hiddenAct) {
  fc1 = register_module("fc1", nn::Linear(nn::LinearOptions(o.hiddenSize, o.intermediateSize)));
  fc2 = register_module("fc2", nn::Linear(nn::LinearOptions(o.intermediateSize, o.hiddenSize)));
}

torch::Tensor CLIPMLPImpl::forward(const torch::Tensor& x) {
  return fc2->forward(clipActivation(act_, fc1->forward(x)));
}

// ---------------------------------------------------------------- layer

CLIPEncoderLayerImpl::CLIPEncoderLayerImpl(const CLIPEncoderOptions& o) {
  auto norm = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hiddenSize}).eps(o.layerNormEps)); };
  self_attn = register_module("self_attn", CLIPAttention(o));
  layer_norm1 = register_module("layer_norm1", norm());
  mlp = register_module("mlp", CLIPMLP(o));
  layer_norm2 = register_module("layer_norm2", norm());
}

torch::Tensor CLIPEncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  torch::Tensor h = x + self_attn->forward(layer_norm1->forward(x), mask);  // pre-LN attention, residual
  return h + mlp->forward(layer_norm2->forward(h));                         // pre-LN MLP, residual
}

// ---------------------------------------------------------------- encoder

CLIPEncoderImpl::CLIPEncoderImpl(const CLIPEncoderOptions& o) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.numHiddenLayers; ++i) {
    layerList.push_back(CLIPEncoderLayer(o));
    layers->push_back(layerList.back());
  }
  // Each layer as a recompute block (x, mask) -> layer(x, mask), built once.
  for (auto& layer : layerList) {
    std::shared_ptr<CLIPEncoderLayerImpl> impl = layer.ptr();
    checkpointFns_.push_back([impl](const std::vector<torch::Tensor>& in) {
      return std::vector<torch::Tensor>{impl->forward(in[0], in[1])};
    });
  }
}

torch::Tensor CLIPEncoderImpl::forward(const torch::Tensor& x, const torch::Tensor& mask, int64_t numLayers,
                                       std::vector<torch::Tensor>* states) {
  const int64_t n = numLayers < 0 ? static_cast<int64_t>(layerList.size()) : numLayers;
  TORCH_CHECK(n <= static_cast<int64_t>(layerList.size()), "CLIPEncoder: asked for ", n, " layers of ",
              layerList.size());
  const bool recompute = gradientCheckpointing && torch::GradMode::is_enabled();
  torch::Tensor h = x;
  if (states) states->push_back(h);
  for (int64_t i = 0; i < n; ++i) {
    if (recompute) {
      // An autograd Function only records itself when an input requires grad; with frozen
      // embeddings that is never the case, and adapters inside the layer would get no gradient.
      torch::Tensor in = h.requires_grad() ? h : h.detach().requires_grad_(true);
      h = train::checkpoint(checkpointFns_[i], {in, mask}).at(0);
    } else {
      h = layerList[i]->forward(h, mask);
    }
    if (states) states->push_back(h);
  }
  return h;
}

}  // namespace sdtune::models
