// Gradient checkpointing by recompute: run a block without keeping its
// activations, and run it again during backward. Gradients are identical to the
// plain run (the RNG state is replayed, so dropout draws the same masks).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

namespace sdtune::train {

using BlockFn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

// Returns fn(inputs). Inputs that are undefined are passed through as undefined.
// When grad mode is off, this is just fn(inputs). fn is copied into the graph (it
// runs again during backward), so capture modules by holder (shared_ptr), not by
// reference. Parameters inside fn get gradients even when no input requires grad.
std::vector<torch::Tensor> checkpoint(const BlockFn& fn, const std::vector<torch::Tensor>& inputs);

// Single-output convenience.
torch::Tensor checkpoint1(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& fn,
                          const std::vector<torch::Tensor>& inputs);

// A block call that can be recomputed: checkpoint() when `recompute` is set; otherwise
// fn(inputs) behind an identity autograd node with the same shape as checkpoint's, so
// each input's gradient is summed inside the block before joining the rest of the
// graph in both modes. That keeps gradients bitwise identical with recompute on and
// off (floating-point sums of three or more terms depend on their grouping).
std::vector<torch::Tensor> block(const BlockFn& fn, const std::vector<torch::Tensor>& inputs, bool recompute);

// Single-output convenience.
torch::Tensor block1(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& fn,
                     const std::vector<torch::Tensor>& inputs, bool recompute);

}  // namespace sdtune::train
