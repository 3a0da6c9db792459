// Loading checkpoint tensors into a module tree whose names are the checkpoint
// keys: a walk, not a rename table. Every tensor must be used and every
// parameter filled; all mismatches are reported together in one error.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace sdtune::models {

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // Checkpoint keys to skip silently (e.g. transformers' position_ids buffer).
  std::function<bool(const std::string&)> ignore;
  // Prefix the checkpoint puts before the module's own names ("" for none).
  std::string prefix;
  // Maps a checkpoint key to the module's name for it (legacy layouts, e.g. the VAE's
  // old query/key/value/proj_attn attention names); applied before prefix matching.
  std::function<std::string(const std::string&)> rename;
};

// Loads every safetensors file in `files` (a sharded checkpoint is several) into
// `module`. `what` names the component in errors ("unet", "vae", ...).
void loadWeights(torch::nn::Module& module, const std::vector<std::string>& files, const LoadOptions& options,
                 const std::string& what);

// Moves every parameter and buffer to dtype/device in place (keeps Module identity).
void castModule(torch::nn::Module& module, at::ScalarType dtype, at::Device device);

// Freezes or unfreezes every parameter.
void setRequiresGrad(torch::nn::Module& module, bool requiresGrad);

}  // namespace sdtune::models
