#include "image/clip_preprocess.h"

#include <ATen/Parallel.h>

#include <stdexcept>

namespace sdtune::image {

namespace {

// Python's a // 2 (floor, also for negatives).
int64_t floorHalf(int64_t a) {
  return a >= 0 ? a / 2 : -((-a + 1) / 2);
}

// transformers' center_crop on an HWC image: crop box from (h - ch) // 2, zero-padded
// (centred, ceil on the leading side) where the image is smaller than the crop.
at::Tensor centerCrop(const at::Tensor& image, int64_t cropHeight, int64_t cropWidth) {
  const int64_t h = image.size(0);
  const int64_t w = image.size(1);
  int64_t top = floorHalf(h - cropHeight);
  int64_t left = floorHalf(w - cropWidth);
  if (top >= 0 && left >= 0 && top + cropHeight <= h && left + cropWidth <= w) {
    return image.slice(0, top, top + cropHeight).slice(1, left, left + cropWidth);
  }
  const int64_t newH = std::max(cropHeight, h);
  const int64_t newW = std::max(cropWidth, w);
  const int64_t padTop = (newH - h + 1) / 2;
  const int64_t padLeft = (newW - w + 1) / 2;
  at::Tensor padded = at::zeros({newH, newW, image.size(2)}, image.options());  // [newH, newW, C]
  padded.slice(0, padTop, padTop + h).slice(1, padLeft, padLeft + w).copy_(image);
  top += padTop;
  left += padLeft;
  return padded.slice(0, std::max<int64_t>(0, top), std::min(newH, top + cropHeight))
      .slice(1, std::max<int64_t>(0, left), std::min(newW, left + cropWidth));
}

at::Tensor resize(const at::Tensor& image, int64_t outHeight, int64_t outWidth, ResampleFilter filter) {
  at::Tensor src = image.contiguous();  // [H, W, C] uint8
  at::Tensor out = at::empty({outHeight, outWidth, src.size(2)}, src.options());
  resample8(src.data_ptr<uint8_t>(), static_cast<int>(src.size(1)), static_cast<int>(src.size(0)),
            static_cast<int>(src.size(2)), out.data_ptr<uint8_t>(), static_cast<int>(outWidth),
            static_cast<int>(outHeight), filter);
  return out;
}

// rescale then normalize with numpy's dtypes: uint8 -> float64 * factor -> float32, then
// (x - float32(mean)) / float32(std) in float32. [H, W, 3] uint8 -> [3, H, W] float32.
at::Tensor toPixelValues(const at::Tensor& hwc, const ClipPreprocessOptions& o) {
  at::Tensor chw = hwc.permute({2, 0, 1});  // [3, H, W]
  at::Tensor x = o.doRescale ? (chw.to(at::kDouble) * o.rescaleFactor).to(at::kFloat) : chw.to(at::kFloat);
  if (o.doNormalize) {
    auto f64 = at::TensorOptions().dtype(at::kDouble);
    at::Tensor mean = at::tensor(o.imageMean, f64).to(at::kFloat).view({-1, 1, 1});  // [3, 1, 1], np.float32(mean)
    at::Tensor stdev = at::tensor(o.imageStd, f64).to(at::kFloat).view({-1, 1, 1});
    x = (x - mean) / stdev;
  }
  return x.contiguous();
}

}  // namespace

void ClipPreprocessOptions::validate() const {
  if (doResize) {
    if (shortestEdge) {
      if (*shortestEdge <= 0) throw std::invalid_argument("size.shortest_edge must be positive");
    } else if (!resizeHeight || !resizeWidth || *resizeHeight <= 0 || *resizeWidth <= 0) {
      throw std::invalid_argument("size must hold shortest_edge, or positive height and width");
    }
  }
  if (doCenterCrop && (cropHeight <= 0 || cropWidth <= 0)) {
    throw std::invalid_argument("crop_size height and width must be positive");
  }
  if (doNormalize && (imageMean.size() != 3 || imageStd.size() != 3)) {
    throw std::invalid_argument("image_mean and image_std must hold 3 values (RGB)");
  }
  for (double s : imageStd) {
    if (doNormalize && s == 0.0) throw std::invalid_argument("image_std must not contain 0");
  }
}

std::pair<int64_t, int64_t> shortestEdgeSize(int64_t height, int64_t width, int64_t shortestEdge) {
  const bool portrait = width <= height;
  const int64_t shortSide = portrait ? width : height;
  const int64_t longSide = portrait ? height : width;
  // Python int(size * long / short): float64 product and quotient, truncated.
  const auto newLong = static_cast<int64_t>(static_cast<double>(shortestEdge) * longSide / shortSide);
  return portrait ? std::make_pair(newLong, shortestEdge) : std::make_pair(shortestEdge, newLong);
}

at::Tensor clipResizeAndCrop(const at::Tensor& image, const ClipPreprocessOptions& o) {
  if (image.scalar_type() != at::kByte || image.dim() != 3 || image.size(2) != 3 || !image.device().is_cpu()) {
    throw std::invalid_argument("CLIP preprocessing wants uint8 CPU images [H, W, 3], got " +
                                std::string(c10::toString(image.scalar_type())) + " " + c10::str(image.sizes()));
  }
  if (image.size(0) == 0 || image.size(1) == 0) throw std::invalid_argument("CLIP preprocessing: empty image");
  at::Tensor x = image;
  if (o.doResize) {
    auto [h, w] = o.shortestEdge ? shortestEdgeSize(x.size(0), x.size(1), *o.shortestEdge)
                                 : std::make_pair(*o.resizeHeight, *o.resizeWidth);
    x = resize(x, h, w, o.filter);
  }
  if (o.doCenterCrop) x = centerCrop(x, o.cropHeight, o.cropWidth);
  return x;
}

at::Tensor clipPreprocess(const std::vector<at::Tensor>& images, const ClipPreprocessOptions& o) {
  o.validate();
  if (images.empty()) throw std::invalid_argument("CLIP preprocessing: no images");
  std::vector<at::Tensor> out(images.size());
  // One image per task; each runs the resampler and small tensor ops on its own.
  at::parallel_for(0, static_cast<int64_t>(images.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = toPixelValues(clipResizeAndCrop(images[i], o), o);
  });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].sizes() != out[0].sizes()) {
      throw std::invalid_argument("CLIP preprocessing: images end up with different sizes (" +
                                  c10::str(out[0].sizes()) + " vs " + c10::str(out[i].sizes()) +
                                  "); enable center crop or resize to a fixed height and width");
    }
  }
  return at::stack(out);  // [n, 3, H, W]
}

}  // namespace sdtune::image
