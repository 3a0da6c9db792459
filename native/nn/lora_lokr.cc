// LoKr (LyCORIS lycoris/modules/lokr.py, no tucker): delta W = kron(w1, w2) * alpha / rank, where
// w1 = lokr_w1 or lokr_w1_a @ lokr_w1_b ([a, c]) and w2 = lokr_w2 or lokr_w2_a @ lokr_w2_b
// ([b, d * kh * kw]); out = a * b, in = c * d. Two full factors: scale 1 (LyCORIS sets alpha = dim).
#include <sstream>

#include "nn/lora_types.h"

namespace sdtune::nn::lora {

namespace {

torch::Tensor side(const std::map<std::string, torch::Tensor>& f, const std::string& w) {
  auto full = f.find("lokr_" + w);
  if (full != f.end()) return full->second.flatten(1);
  return f.at("lokr_" + w + "_a").matmul(f.at("lokr_" + w + "_b").flatten(1));
}

}  // namespace

std::pair<int64_t, int64_t> lokrFactorization(int64_t dimension, int64_t factor) {
  if (factor > 0 && dimension % factor == 0) {
    int64_t m = factor, n = dimension / factor;
    return m > n ? std::make_pair(n, m) : std::make_pair(m, n);
  }
  if (factor < 0) factor = dimension;
  int64_t m = 1, n = dimension, length = m + n;
  while (m < n) {
    int64_t newM = m + 1;
    while (dimension % newM != 0) ++newM;
    const int64_t newN = dimension / newM;
    if (newM + newN > length || newM > factor) break;
    m = newM;
    n = newN;
  }
  return m > n ? std::make_pair(n, m) : std::make_pair(m, n);
}

std::map<std::string, torch::Tensor> createLokr(at::IntArrayRef shape, const LokrOptions& options, at::Generator gen) {
  const auto cpu = torch::TensorOptions().dtype(at::kFloat);
  const int64_t r = options.rank;
  auto [inM, inN] = lokrFactorization(shape[1], options.factor);
  auto [outL, outK] = lokrFactorization(shape[0], options.factor);
  std::vector<int64_t> kernel(shape.begin() + 2, shape.end());
  int64_t kernelSize = 1;
  for (int64_t k : kernel) kernelSize *= k;
  std::map<std::string, torch::Tensor> f;
  // w2, the bigger part: full (zeros) when the rank is at least half its larger side.
  if (2 * r >= std::max(outK, inN)) {
    std::vector<int64_t> w2{outK, inN};
    w2.insert(w2.end(), kernel.begin(), kernel.end());
    f["lokr_w2"] = torch::zeros(w2, cpu);
  } else {
    f["lokr_w2_a"] = torch::empty({outK, r}, cpu);
    kaimingUniform(f["lokr_w2_a"], gen);
    f["lokr_w2_b"] = torch::zeros({r, inN * kernelSize}, cpu);
  }
  if (options.decomposeBoth && 2 * r < std::max(outL, inM)) {
    f["lokr_w1_a"] = torch::empty({outL, r}, cpu);
    f["lokr_w1_b"] = torch::empty({r, inM}, cpu);
    kaimingUniform(f["lokr_w1_a"], gen);
    kaimingUniform(f["lokr_w1_b"], gen);
  } else {
    f["lokr_w1"] = torch::empty({outL, inM}, cpu);
    kaimingUniform(f["lokr_w1"], gen);
  }
  return f;
}

torch::Tensor lokrWeight(const std::map<std::string, torch::Tensor>& f, at::IntArrayRef shape) {
  return torch::kron(side(f, "w1"), side(f, "w2")).view(shape);
}

std::string lokrMisfit(const std::map<std::string, torch::Tensor>& f, at::IntArrayRef shape, int64_t& dim) {
  size_t used = 0;
  std::vector<int64_t> rs;
  for (const std::string w : {"w1", "w2"}) {
    const bool full = f.count("lokr_" + w), a = f.count("lokr_" + w + "_a"), b = f.count("lokr_" + w + "_b");
    if (full == (a || b) || a != b) {
      return "LoKr needs lokr_" + w + " or both lokr_" + w + "_a and lokr_" + w +
             "_b (tucker's lokr_t2 is not supported)";
    }
    used += full ? 1 : 2;
    if (full) continue;
    const torch::Tensor &ta = f.at("lokr_" + w + "_a"), &tb = f.at("lokr_" + w + "_b");
    if (ta.dim() != 2 || tb.dim() < 2 || ta.size(1) != tb.size(0) || ta.size(1) == 0) {
      std::ostringstream msg;
      msg << "lokr_" << w << "_a " << ta.sizes() << " and lokr_" << w << "_b " << tb.sizes() << " do not multiply";
      return msg.str();
    }
    rs.push_back(tb.size(0));
  }
  if (used != f.size()) return "unexpected LoKr factors (tucker's lokr_t2 is not supported)";
  if (rs.size() == 2 && rs[0] != rs[1]) return "lokr_w1_b and lokr_w2_b have different ranks";
  const torch::Tensor w1 = f.count("lokr_w1") ? f.at("lokr_w1") : f.at("lokr_w1_a");
  const torch::Tensor w1b = f.count("lokr_w1") ? f.at("lokr_w1") : f.at("lokr_w1_b");
  const torch::Tensor w2 = f.count("lokr_w2") ? f.at("lokr_w2") : f.at("lokr_w2_a");
  const torch::Tensor w2b = f.count("lokr_w2") ? f.at("lokr_w2") : f.at("lokr_w2_b");
  int64_t flatIn = 1;
  for (size_t i = 1; i < shape.size(); ++i) flatIn *= shape[i];
  const int64_t rows = w1.size(0) * w2.size(0), cols = (w1b.numel() / w1b.size(0)) * (w2b.numel() / w2b.size(0));
  if (w1.dim() != 2 || rows != shape[0] || cols != flatIn) {
    std::ostringstream msg;
    msg << "LoKr factors give a " << rows << " x " << cols << " weight, the layer's is " << shape;
    return msg.str();
  }
  dim = f.count("lokr_w1_b") ? f.at("lokr_w1_b").size(0) : f.count("lokr_w2_b") ? f.at("lokr_w2_b").size(0) : 0;
  return "";
}

}  // namespace sdtune::nn::lora
