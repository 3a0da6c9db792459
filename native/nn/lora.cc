#include "nn/lora.h"

#include "nn/lora_types.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace sdtune::nn::lora {

namespace {

std::string shapeText(at::IntArrayRef shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

void checkName(const std::string& name) {
  if (name.empty()) throw std::invalid_argument("a LoRA adapter name must not be empty");
}

std::map<std::string, AdaptableLayer*> layersByPath(torch::nn::Module& root) {
  std::map<std::string, AdaptableLayer*> out;
  for (auto& l : adaptableLayers(root)) out[l.path] = l.layer;
  return out;
}

// Why a path names no adaptable layer: no module at all, or one of another kind.
std::string notAdaptable(const std::string& key, const std::string& path,
                         const std::map<std::string, std::string>& kinds) {
  auto it = kinds.find(path);
  if (it == kinds.end()) return key + ": no such module in this model";
  return key + ": a " + it->second + ", not a Linear or Conv2d layer";
}

bool hasAdapter(torch::nn::Module& root, const std::string& name) {
  for (auto& l : adaptableLayers(root)) {
    if (l.layer->adapters().count(name)) return true;
  }
  return false;
}

// down/up reshaped to the layer's layout, or undefined tensors when they do not fit.
// Equivalent layouts are accepted: [r, in] for a 1x1 conv's [r, in, 1, 1] and back.
std::pair<torch::Tensor, torch::Tensor> fitShapes(AdaptableLayer& layer, const torch::Tensor& down,
                                                  const torch::Tensor& up) {
  const at::IntArrayRef w = layer.baseWeight().sizes();  // [out, in] or [out, in, kh, kw]
  const bool pointwise = layer.isConv() && w[2] == 1 && w[3] == 1;
  auto is1x1 = [](const torch::Tensor& t) { return t.dim() == 4 && t.size(2) == 1 && t.size(3) == 1; };
  torch::Tensor d, u;
  if (!layer.isConv()) {
    if (down.dim() == 2 || is1x1(down)) d = down.flatten(1);  // [r, in]
    if (up.dim() == 2 || is1x1(up)) u = up.flatten(1);        // [out, r]
    if (!d.defined() || !u.defined() || d.size(1) != w[1] || u.size(0) != w[0]) return {};
  } else {
    if (down.dim() == 4 && down.size(2) == w[2] && down.size(3) == w[3]) d = down;  // LoCon: the layer's kernel
    if (down.dim() == 2 && pointwise) d = down.view({down.size(0), down.size(1), 1, 1});
    if (is1x1(up)) u = up;
    if (up.dim() == 2) u = up.view({up.size(0), up.size(1), 1, 1});
    if (!d.defined() || !u.defined() || d.size(1) != w[1] || u.size(0) != w[0]) return {};
  }
  if (d.size(0) != u.size(1) || d.size(0) == 0) return {};
  return {d, u};
}

// A trainable float32 leaf on `device`.
torch::Tensor leaf(const torch::Tensor& t, at::Device device, bool trainable) {
  torch::Tensor out = t.detach().to(device, at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
  out.set_requires_grad(trainable);
  return out;
}

}  // namespace

// One error for many problems (lora_types.h), each on its own line (the first 40, then a count).
[[noreturn]] void fail(const std::string& title, const std::vector<std::string>& problems) {
  std::ostringstream msg;
  msg << title << " (" << problems.size() << (problems.size() == 1 ? " problem" : " problems") << "):";
  for (size_t i = 0; i < problems.size(); ++i) {
    if (i == 40) {
      msg << "\n  ... and " << problems.size() - 40 << " more";
      break;
    }
    msg << "\n  " << problems[i];
  }
  throw std::invalid_argument(msg.str());
}

// torch.nn.init.kaiming_uniform_(t, a=sqrt(5)) drawing from `gen`, computed as torch does
// (gain / sqrt(fan_in), times sqrt(3)) so the same generator state gives the same values.
void kaimingUniform(torch::Tensor& t, at::Generator gen) {
  const double a = std::sqrt(5.0);
  const double fanIn = static_cast<double>(t.numel() / t.size(0));
  const double gain = std::sqrt(2.0 / (1 + a * a));
  const double bound = std::sqrt(3.0) * (gain / std::sqrt(fanIn));
  t.uniform_(-bound, bound, gen);
}

std::vector<Layer> adaptableLayers(torch::nn::Module& root) {
  std::vector<Layer> out;
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    if (auto* layer = dynamic_cast<AdaptableLayer*>(item.value().get()))
      out.push_back({item.key(), layer, item.value()});
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> moduleKinds(torch::nn::Module& root) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    torch::nn::Module* m = item.value().get();
    std::string kind = dynamic_cast<LinearImpl*>(m) ? "linear" : dynamic_cast<Conv2dImpl*>(m) ? "conv2d" : m->name();
    out.emplace_back(item.key(), kind);
  }
  return out;
}

// ---- attach

void attach(torch::nn::Module& root, const std::string& name, const std::vector<AdapterWeights>& adapters,
            const AttachOptions& options) {
  checkName(name);
  if (!(options.dropout >= 0 && options.dropout < 1)) throw std::invalid_argument("LoRA dropout must be in [0, 1)");
  if (!std::isfinite(options.multiplier)) throw std::invalid_argument("LoRA multiplier must be finite");
  if (hasAdapter(root, name)) {
    throw std::invalid_argument("a LoRA adapter named \"" + name + "\" is already on this model: remove it first");
  }
  auto layers = layersByPath(root);
  std::map<std::string, std::string> kinds;
  for (auto& [path, kind] : moduleKinds(root)) kinds[path] = kind;

  struct Planned {
    AdaptableLayer* layer;
    torch::Tensor down, up;
    double alpha;
    const AdapterWeights* source;
    int64_t dim;
  };
  std::vector<Planned> plan;
  std::vector<std::string> unmatched, misfits, problems;
  std::set<std::string> seen;
  for (const auto& a : adapters) {
    const std::string key = options.keyPrefix + a.path;
    if (!seen.insert(a.path).second) {
      problems.push_back(key + ": listed twice");
      continue;
    }
    auto it = layers.find(a.path);
    if (it == layers.end()) {
      unmatched.push_back(notAdaptable(key, a.path, kinds));
      continue;
    }
    if (!std::isfinite(a.alpha)) {
      problems.push_back(key + ": alpha must be finite");
      continue;
    }
    int64_t dim = 0;
    std::string misfit = typedMisfit(a.type, a.factors, it->second->baseWeight().sizes(), dim);
    if (!misfit.empty()) {
      misfits.push_back(key + ": " + misfit);
      continue;
    }
    if (a.type == AdapterType::Loha || a.type == AdapterType::Lokr) {
      plan.push_back({it->second, {}, {}, a.alpha, &a, dim});
      continue;
    }
    if (!a.down.defined() || !a.up.defined() || !at::isFloatingType(a.down.scalar_type()) ||
        !at::isFloatingType(a.up.scalar_type())) {
      problems.push_back(key + ": down and up must be floating-point tensors");
      continue;
    }
    auto [down, up] = fitShapes(*it->second, a.down, a.up);
    if (!down.defined()) {
      misfits.push_back(key + ": LoRA down " + shapeText(a.down.sizes()) + " / up " + shapeText(a.up.sizes()) +
                        " does not fit the model's weight " + shapeText(it->second->baseWeight().sizes()));
      continue;
    }
    plan.push_back({it->second, down, up, a.alpha, &a, dim});
  }
  if (!unmatched.empty() || !misfits.empty() || !problems.empty()) {
    std::vector<std::string> all;
    for (auto& u : unmatched) all.push_back("unmatched key " + u);
    for (auto& m : misfits) all.push_back("shape mismatch " + m);
    all.insert(all.end(), problems.begin(), problems.end());
    fail("LoRA \"" + name + "\" does not fit this model" + (misfits.empty() ? "" : " (made for another base model?)"),
         all);
  }

  torch::NoGradGuard noGrad;
  for (auto& p : plan) {
    at::Device device = p.layer->baseWeight().device();
    LoraAdapter adapter;
    adapter.type = p.source->type;
    if (p.down.defined()) adapter.down = leaf(p.down, device, options.trainable);
    if (p.up.defined()) adapter.up = leaf(p.up, device, options.trainable);
    for (const auto& [n, t] : p.source->factors) adapter.factors[n] = leaf(t, device, options.trainable);
    adapter.dim = p.dim;
    adapter.alpha = p.alpha;
    adapter.multiplier = options.multiplier;
    adapter.dropout = options.dropout;
    p.layer->adapters()[name] = std::move(adapter);
  }
}

// ---- create

namespace {

// A LoHa / LoKr adapter with LyCORIS' shapes and init on one layer.
LoraAdapter createFactored(AdaptableLayer& layer, const CreateOptions& options, at::Generator gen) {
  const at::IntArrayRef w = layer.baseWeight().sizes();
  LoraAdapter adapter;
  adapter.type = options.type;
  auto factors = options.type == AdapterType::Loha
                     ? createLoha(w, {options.rank}, gen)
                     : createLokr(w, {options.rank, options.factor, options.decomposeBoth}, gen);
  for (auto& [n, t] : factors) adapter.factors[n] = leaf(t, layer.baseWeight().device(), true);
  std::string misfit = typedMisfit(options.type, adapter.factors, w, adapter.dim);
  if (!misfit.empty()) throw std::logic_error(misfit);  // our own shapes always fit
  adapter.alpha = options.alpha;
  adapter.multiplier = options.multiplier;
  return adapter;
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> create(torch::nn::Module& root, const std::string& name,
                                                          const CreateOptions& options) {
  checkName(name);
  if (options.rank <= 0) throw std::invalid_argument("LoRA rank must be a positive integer");
  if (!std::isfinite(options.alpha)) throw std::invalid_argument("LoRA alpha must be finite");
  if (!(options.dropout >= 0 && options.dropout < 1)) throw std::invalid_argument("LoRA dropout must be in [0, 1)");
  if (options.dropout > 0 && (options.type == AdapterType::Loha || options.type == AdapterType::Lokr)) {
    throw std::invalid_argument("LoHa / LoKr adapters take no dropout (LyCORIS has none for them): set dropout to 0");
  }
  if (options.paths.empty()) throw std::invalid_argument("no target layers for LoRA \"" + name + "\"");
  if (hasAdapter(root, name)) {
    throw std::invalid_argument("a LoRA adapter named \"" + name + "\" is already on this model: remove it first");
  }
  auto layers = layersByPath(root);
  std::map<std::string, std::string> kinds;
  for (auto& [path, kind] : moduleKinds(root)) kinds[path] = kind;
  std::set<std::string> wanted;
  std::vector<std::string> problems;
  for (const auto& path : options.paths) {
    if (!layers.count(path)) problems.push_back(notAdaptable(options.keyPrefix + path, path, kinds));
    wanted.insert(path);
  }
  if (!problems.empty()) fail("cannot create LoRA \"" + name + "\"", problems);

  at::Generator gen = options.generator ? *options.generator : at::detail::getDefaultCPUGenerator();
  torch::NoGradGuard noGrad;
  const auto cpu = torch::TensorOptions().dtype(at::kFloat);
  for (auto& l : adaptableLayers(root)) {
    if (!wanted.count(l.path)) continue;
    const at::IntArrayRef w = l.layer->baseWeight().sizes();
    if (options.type == AdapterType::Loha || options.type == AdapterType::Lokr) {
      l.layer->adapters()[name] = createFactored(*l.layer, options, gen);
      continue;
    }
    std::vector<int64_t> downShape{options.rank, w[1]}, upShape{w[0], options.rank};
    if (l.layer->isConv()) {
      downShape.insert(downShape.end(), {w[2], w[3]});  // [r, in, kh, kw]
      upShape.insert(upShape.end(), {1, 1});            // [out, r, 1, 1]
    }
    torch::Tensor down = torch::empty(downShape, cpu);
    torch::Tensor up = torch::zeros(upShape, cpu);
    if (options.init == Init::Gaussian) {
      down.normal_(0.0, 1.0 / static_cast<double>(options.rank), gen);
    } else {
      kaimingUniform(down, gen);
    }
    if (options.init == Init::Random) kaimingUniform(up, gen);
    LoraAdapter adapter;
    adapter.down = leaf(down, l.layer->baseWeight().device(), true);
    adapter.up = leaf(up, l.layer->baseWeight().device(), true);
    adapter.alpha = options.alpha;
    adapter.multiplier = options.multiplier;
    adapter.dropout = options.dropout;
    if (options.type == AdapterType::Dora) {
      adapter.type = AdapterType::Dora;
      torch::Tensor m = doraMagnitude(l.layer->baseWeight(), down, up, {options.alpha / options.rank});
      adapter.factors["magnitude"] = leaf(m, l.layer->baseWeight().device(), true);
    }
    l.layer->adapters()[name] = std::move(adapter);
  }
  return parameters(root, name);
}

// ---- reading adapters back

std::vector<std::pair<std::string, torch::Tensor>> parameters(torch::nn::Module& root, const std::string& name) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& l : adaptableLayers(root)) {
    auto it = l.layer->adapters().find(name);
    if (it == l.layer->adapters().end()) continue;
    const LoraAdapter& a = it->second;
    if (a.down.defined()) {
      out.emplace_back(l.path + ".lora_A.weight", a.down);
      out.emplace_back(l.path + ".lora_B.weight", a.up);
    }
    for (const auto& [n, t] : a.factors) {
      out.emplace_back(l.path + "." + (n == "magnitude" ? std::string("lora_magnitude_vector") : n), t);
    }
  }
  if (out.empty()) throw std::invalid_argument("no LoRA adapter named \"" + name + "\" on this model");
  return out;
}

std::vector<AdapterWeights> extract(torch::nn::Module& root, const std::string& name) {
  std::vector<AdapterWeights> out;
  torch::NoGradGuard noGrad;
  for (auto& l : adaptableLayers(root)) {
    auto it = l.layer->adapters().find(name);
    if (it == l.layer->adapters().end()) continue;
    const LoraAdapter& a = it->second;
    AdapterWeights w{l.path, {}, {}, a.alpha, a.type, {}};
    if (a.down.defined()) w.down = a.down.detach().clone();
    if (a.up.defined()) w.up = a.up.detach().clone();
    for (const auto& [n, t] : a.factors) w.factors[n] = t.detach().clone();
    out.push_back(std::move(w));
  }
  if (out.empty()) throw std::invalid_argument("no LoRA adapter named \"" + name + "\" on this model");
  return out;
}

std::vector<AdapterInfo> list(torch::nn::Module& root) {
  std::map<std::string, AdapterInfo> byName;
  for (auto& l : adaptableLayers(root)) {
    for (const auto& [name, a] : l.layer->adapters()) {
      auto [it, fresh] = byName.try_emplace(name);
      AdapterInfo& info = it->second;
      if (fresh) {
        info.name = name;
        info.minRank = info.maxRank = a.rank();
        info.multiplier = a.multiplier;
        info.enabled = a.enabled && l.layer->adaptersActive;
        info.trainable = a.trainable();
        info.type = adapterTypeName(a.type);
      }
      info.layers += 1;
      info.minRank = std::min(info.minRank, a.rank());
      info.maxRank = std::max(info.maxRank, a.rank());
      info.fusedLayers += a.fused ? 1 : 0;
    }
  }
  std::vector<AdapterInfo> out;
  for (auto& [name, info] : byName) out.push_back(info);
  return out;
}

}  // namespace sdtune::nn::lora
