// LoHa (LyCORIS lycoris/modules/loha.py, no tucker): delta W = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank.
#include <sstream>

#include "nn/lora_types.h"

namespace sdtune::nn::lora {

namespace {

const char* const kNames[] = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"};

int64_t flatIn(at::IntArrayRef shape) {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

}  // namespace

std::map<std::string, torch::Tensor> createLoha(at::IntArrayRef shape, const LohaOptions& options, at::Generator gen) {
  const auto cpu = torch::TensorOptions().dtype(at::kFloat);
  const int64_t r = options.rank, out = shape[0], in = flatIn(shape);
  std::map<std::string, torch::Tensor> f;
  f["hada_w1_a"] = torch::empty({out, r}, cpu);
  f["hada_w1_b"] = torch::empty({r, in}, cpu);
  f["hada_w2_a"] = torch::zeros({out, r}, cpu);
  f["hada_w2_b"] = torch::empty({r, in}, cpu);
  f["hada_w1_b"].normal_(0.0, 1.0, gen);  // LyCORIS' draw order
  f["hada_w1_a"].normal_(0.0, 0.1, gen);
  f["hada_w2_b"].normal_(0.0, 1.0, gen);
  return f;
}

torch::Tensor lohaWeight(const std::map<std::string, torch::Tensor>& f, at::IntArrayRef shape) {
  torch::Tensor m1 = f.at("hada_w1_a").matmul(f.at("hada_w1_b").flatten(1));
  torch::Tensor m2 = f.at("hada_w2_a").matmul(f.at("hada_w2_b").flatten(1));
  return (m1 * m2).view(shape);
}

std::string lohaMisfit(const std::map<std::string, torch::Tensor>& f, at::IntArrayRef shape, int64_t& dim) {
  for (const char* name : kNames) {
    if (!f.count(name))
      return std::string("missing ") + name + " (LoHa needs hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b)";
  }
  if (f.size() != 4) return "LoHa factors must be exactly hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b (no tucker)";
  const torch::Tensor &w1a = f.at("hada_w1_a"), &w1b = f.at("hada_w1_b");
  const torch::Tensor &w2a = f.at("hada_w2_a"), &w2b = f.at("hada_w2_b");
  const int64_t r = w1b.size(0);
  auto fits = [&](const torch::Tensor& a, const torch::Tensor& b) {
    return a.dim() == 2 && b.dim() >= 2 && a.size(0) == shape[0] && a.size(1) == b.size(0) &&
           b.numel() / std::max<int64_t>(b.size(0), 1) == flatIn(shape);
  };
  if (!fits(w1a, w1b) || !fits(w2a, w2b) || w2b.size(0) != r || r == 0) {
    std::ostringstream msg;
    msg << "LoHa factors w1_a " << w1a.sizes() << ", w1_b " << w1b.sizes() << ", w2_a " << w2a.sizes() << ", w2_b "
        << w2b.sizes() << " do not give the layer's weight " << shape << " (want [out, r] and [r, in*kh*kw])";
    return msg.str();
  }
  dim = r;
  return "";
}

}  // namespace sdtune::nn::lora
