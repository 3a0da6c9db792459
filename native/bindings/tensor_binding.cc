// Registers the Tensor class (tensor_handle.cc) with the module.
#include "bindings/common.h"
#include "bindings/tensor_handle.h"

namespace sdtune {
SDTUNE_REGISTER_BINDING(tensor, TensorHandle::init);
}  // namespace sdtune
