#include "models/state_dict.h"

#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "io/safetensors.h"

namespace sdtune::models {

namespace {

std::string shapeText(at::IntArrayRef shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

}  // namespace

void loadWeights(torch::nn::Module& module, const std::vector<std::string>& files, const LoadOptions& options,
                 const std::string& what) {
  // Every destination tensor (parameters and buffers) by its full name.
  std::map<std::string, torch::Tensor> targets;
  for (auto& item : module.named_parameters(/*recurse=*/true)) targets[options.prefix + item.key()] = item.value();
  for (auto& item : module.named_buffers(/*recurse=*/true)) targets[options.prefix + item.key()] = item.value();

  std::vector<std::shared_ptr<safetensors::MappedFile>> opened;
  std::map<std::string, std::pair<size_t, const safetensors::TensorInfo*>> sources;
  std::vector<std::string> problems;
  for (const auto& path : files) {
    opened.push_back(safetensors::MappedFile::open(path));
    for (const auto& info : opened.back()->header().tensors) {
      std::string name = options.rename ? options.rename(info.name) : info.name;
      if (sources.count(name)) {
        problems.push_back("key " + name + " appears more than once");
        continue;
      }
      sources[name] = {opened.size() - 1, &info};
    }
  }

  std::vector<std::string> unexpected, missing, misshaped;
  for (const auto& [name, source] : sources) {
    if (options.ignore && options.ignore(name)) continue;
    auto it = targets.find(name);
    if (it == targets.end()) {
      unexpected.push_back(name + " " + shapeText(source.second->shape));
      continue;
    }
    if (it->second.sizes() != at::IntArrayRef(source.second->shape)) {
      misshaped.push_back(name + ": checkpoint " + shapeText(source.second->shape) + ", model " +
                          shapeText(it->second.sizes()));
    }
  }
  for (const auto& [name, tensor] : targets) {
    if (!sources.count(name)) missing.push_back(name + " " + shapeText(tensor.sizes()));
  }
  if (!unexpected.empty() || !missing.empty() || !misshaped.empty() || !problems.empty()) {
    std::ostringstream msg;
    msg << what << ": the checkpoint does not match the model config";
    auto list = [&](const char* title, const std::vector<std::string>& items) {
      if (items.empty()) return;
      msg << "\n  " << title << " (" << items.size() << "):";
      size_t shown = 0;
      for (const auto& item : items) {
        if (shown++ == 40) {
          msg << "\n    ... and " << items.size() - 40 << " more";
          break;
        }
        msg << "\n    " << item;
      }
    };
    list("shape mismatches", misshaped);
    list("missing from the checkpoint", missing);
    list("in the checkpoint but not in the model", unexpected);
    list("other problems", problems);
    msg << "\n  (files: ";
    for (size_t i = 0; i < files.size(); ++i) msg << (i ? ", " : "") << files[i];
    msg << ")";
    throw std::runtime_error(msg.str());
  }

  torch::NoGradGuard noGrad;
  for (auto& [name, target] : targets) {
    const auto& [fileIndex, info] = sources.at(name);
    torch::Tensor source = opened[fileIndex]->tensor(*info);
    at::ScalarType dtype = at::isFloatingType(target.scalar_type()) ? options.dtype : target.scalar_type();
    // set_data swaps storage in place, so the module keeps the same Parameter objects.
    target.set_data(source.to(options.device, dtype, /*non_blocking=*/false, /*copy=*/true));
  }
}

void castModule(torch::nn::Module& module, at::ScalarType dtype, at::Device device) {
  torch::NoGradGuard noGrad;
  for (auto& p : module.parameters(true)) {
    p.set_data(p.to(device, at::isFloatingType(p.scalar_type()) ? dtype : p.scalar_type()));
  }
  for (auto& b : module.buffers(true)) {
    b.set_data(b.to(device, at::isFloatingType(b.scalar_type()) ? dtype : b.scalar_type()));
  }
}

void setRequiresGrad(torch::nn::Module& module, bool requiresGrad) {
  for (auto& p : module.parameters(true)) p.set_requires_grad(requiresGrad);
}

}  // namespace sdtune::models
