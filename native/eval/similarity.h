// Embedding similarities for evaluation metrics (CLIP score, CLIP-I, CLIP-T), in the
// embeddings' dtype with torchmetrics' operation order.
#pragma once

#include <torch/torch.h>

namespace sdtune::eval {

// x / ||x||_2 along the last dim (torchmetrics: x / x.norm(p=2, dim=-1, keepdim=True)).
at::Tensor l2Normalize(const at::Tensor& x);

// scale * <a_i/|a_i|, b_i/|b_i|> per row: a, b [n, d] -> [n]. CLIP score uses scale 100.
at::Tensor rowCosine(const at::Tensor& a, const at::Tensor& b, double scale = 1.0);

// Every pair: a [n, d], b [m, d] -> [n, m] cosines.
at::Tensor cosineMatrix(const at::Tensor& a, const at::Tensor& b);

}  // namespace sdtune::eval
