#include "models/clip.h"

#include <map>
#include <mutex>
#include <stdexcept>

#include "models/state_dict.h"

namespace sdtune::models {

void CLIPModelOptions::validate() const {
  text.validate("text_config");
  vision.validate("vision_config");
  if (projectionDim <= 0) {
    throw std::invalid_argument("projection_dim must be a positive integer (got " + std::to_string(projectionDim) +
                                ")");
  }
}

CLIPModelImpl::CLIPModelImpl(const CLIPModelOptions& o) : options_(o) {
  o.validate();
  text_model = register_module("text_model", CLIPTextTransformer(o.text));
  vision_model = register_module("vision_model", CLIPVisionTransformer(o.vision));
  visual_projection = register_module(
      "visual_projection", nn::Linear(nn::LinearOptions(o.vision.encoder.hiddenSize, o.projectionDim).bias(false)));
  text_projection = register_module(
      "text_projection", nn::Linear(nn::LinearOptions(o.text.encoder.hiddenSize, o.projectionDim).bias(false)));
  logit_scale = register_parameter("logit_scale", torch::full({}, o.logitScaleInitValue));
}

torch::Tensor CLIPModelImpl::getTextFeatures(const torch::Tensor& inputIds, const torch::Tensor& attentionMask) {
  CLIPTextForwardOptions forward;
  forward.attentionMask = attentionMask;
  return text_projection->forward(text_model->forward(inputIds, forward).pooledOutput);  // [B, P]
}

torch::Tensor CLIPModelImpl::getImageFeatures(const torch::Tensor& pixelValues) {
  return visual_projection->forward(vision_model->forward(pixelValues).pooledOutput);  // [B, P]
}

// ---------------------------------------------------------------- loading

namespace {

LoadOptions toLoadOptions(const CLIPLoadOptions& load) {
  LoadOptions options;
  options.dtype = load.dtype;
  options.device = load.device;
  std::vector<std::string> prefixes = load.ignorePrefixes;
  options.ignore = [prefixes](const std::string& key) {
    // Older transformers saved the position_ids buffer; it is arange(n) and carries nothing.
    static const std::string positionIds = ".embeddings.position_ids";
    if (key.size() >= positionIds.size() &&
        key.compare(key.size() - positionIds.size(), positionIds.size(), positionIds) == 0) {
      return true;
    }
    for (const auto& p : prefixes) {
      if (key.compare(0, p.size(), p) == 0) return true;
    }
    return false;
  };
  return options;
}

template <typename Model>
void finishLoad(Model& model) {
  setRequiresGrad(*model, false);  // frozen until a trainer says otherwise
  model->eval();
}

}  // namespace

CLIPTextModel loadCLIPTextModel(const CLIPTextOptions& options, const std::vector<std::string>& files,
                                const CLIPLoadOptions& load) {
  checkTransformerDtype(load.dtype, load.device, load.what);
  CLIPTextModel model = [&] {
    nn::SkipInitGuard skip;  // every weight is loaded next
    return CLIPTextModel(options);
  }();
  loadWeights(*model, files, toLoadOptions(load), load.what);
  finishLoad(model);
  return model;
}

CLIPTextModel randomCLIPTextModel(const CLIPTextOptions& options, uint64_t seed, const CLIPLoadOptions& load) {
  checkTransformerDtype(load.dtype, load.device, load.what);
  torch::manual_seed(seed);
  CLIPTextModel model(options);
  castModule(*model, load.dtype, load.device);
  finishLoad(model);
  return model;
}

CLIPModel loadCLIPModel(const CLIPModelOptions& options, const std::vector<std::string>& files,
                        const CLIPLoadOptions& load) {
  checkTransformerDtype(load.dtype, load.device, load.what);
  CLIPModel model = [&] {
    nn::SkipInitGuard skip;  // every weight is loaded next
    return CLIPModel(options);
  }();
  loadWeights(*model, files, toLoadOptions(load), load.what);
  finishLoad(model);
  return model;
}

void checkTransformerDtype(at::ScalarType dtype, at::Device device, const std::string& what) {
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) {
    throw std::invalid_argument(what + ": dtype " + std::string(c10::toString(dtype)) +
                                " is not supported (expected float32, float16 or bfloat16)");
  }
  if (dtype == at::kFloat || !device.is_cpu()) return;
  // Feature-test once per dtype: the ops a transformer block needs, on a tiny input.
  static std::mutex mutex;
  static std::map<at::ScalarType, std::string> verdicts;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = verdicts.find(dtype);
  if (it == verdicts.end()) {
    std::string problem;
    try {
      torch::NoGradGuard noGrad;
      auto o = torch::TensorOptions().dtype(dtype);
      torch::Tensor x = torch::ones({1, 2, 4}, o);
      torch::Tensor y = torch::nn::functional::linear(x, torch::ones({4, 4}, o), torch::ones({4}, o));
      y = torch::layer_norm(y, {4}, torch::ones({4}, o), torch::zeros({4}, o), 1e-5);
      y = torch::softmax(torch::matmul(y, y.transpose(1, 2)), -1);
      (void)torch::gelu(y).sum().item<double>();
    } catch (const std::exception&) {
      problem = "this libtorch cannot run matmul/layer_norm in " + std::string(c10::toString(dtype)) + " on the CPU";
    }
    it = verdicts.emplace(dtype, problem).first;
  }
  if (!it->second.empty()) {
    std::string instead = dtype == at::kHalf ? "\"float32\" or \"bfloat16\"" : "\"float32\"";
    throw std::invalid_argument(what + ": " + it->second + "; load with dtype " + instead + " on the CPU");
  }
}

}  // namespace sdtune::models
