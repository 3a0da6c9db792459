#include "eval/similarity.h"

#include <stdexcept>

namespace sdtune::eval {

namespace {

void requireEmbeddings(const at::Tensor& t, const char* what) {
  if (t.dim() != 2 || !at::isFloatingType(t.scalar_type())) {
    throw std::invalid_argument(std::string(what) + " must be floating-point embeddings [n, dim], got " +
                                c10::toString(t.scalar_type()) + " " + c10::str(t.sizes()));
  }
}

}  // namespace

at::Tensor l2Normalize(const at::Tensor& x) {
  return x / x.norm(2, {-1}, /*keepdim=*/true);
}

at::Tensor rowCosine(const at::Tensor& a, const at::Tensor& b, double scale) {
  requireEmbeddings(a, "a");
  requireEmbeddings(b, "b");
  if (a.sizes() != b.sizes()) {
    throw std::invalid_argument("pairwise embeddings must have one shape, got " + c10::str(a.sizes()) + " and " +
                                c10::str(b.sizes()));
  }
  return scale * (l2Normalize(a) * l2Normalize(b)).sum(-1);  // [n]
}

at::Tensor cosineMatrix(const at::Tensor& a, const at::Tensor& b) {
  requireEmbeddings(a, "a");
  requireEmbeddings(b, "b");
  if (a.size(1) != b.size(1)) {
    throw std::invalid_argument("embedding widths differ: " + c10::str(a.sizes()) + " vs " + c10::str(b.sizes()));
  }
  return at::matmul(l2Normalize(a), l2Normalize(b).t());  // [n, m]
}

}  // namespace sdtune::eval
