// The rank-agreement check of data-parallel training (distributed.verifyEvery): a hash of the
// trainer state that every rank computes and all-gathers. Kept apart from process_group.cc so it
// builds without the c10d headers.
#include "parallel/process_group.h"

namespace sdtune::dist {

int64_t hashTensors(const std::vector<torch::Tensor>& tensors) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
    const auto* bytes = static_cast<const uint8_t*>(c.data_ptr());
    const size_t n = c.numel() * c.element_size();
    for (size_t i = 0; i < n; ++i) {
      h ^= bytes[i];
      h *= 1099511628211ull;
    }
  }
  // 53 bits: exact as a JS number.
  return static_cast<int64_t>(h & ((1ull << 53) - 1));
}

}  // namespace sdtune::dist
