// transformers' CLIPImageProcessor.preprocess on decoded RGB images: resize (shortest
// edge, PIL resampling via resample.h), center crop (zero padding when too small),
// rescale and normalize with numpy's dtype rules, stacked into pixel_values.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "image/resample.h"

namespace sdtune::image {

struct ClipPreprocessOptions {
  bool doResize = true;
  // Either shortestEdge (size {"shortest_edge": n}) or height + width (size {"height", "width"}).
  std::optional<int64_t> shortestEdge = 224;
  std::optional<int64_t> resizeHeight;
  std::optional<int64_t> resizeWidth;
  ResampleFilter filter = ResampleFilter::Bicubic;
  bool doCenterCrop = true;
  int64_t cropHeight = 224;
  int64_t cropWidth = 224;
  bool doRescale = true;
  double rescaleFactor = 1.0 / 255.0;
  bool doNormalize = true;
  std::vector<double> imageMean{0.48145466, 0.4578275, 0.40821073};
  std::vector<double> imageStd{0.26862954, 0.26130258, 0.27577711};

  // Throws std::invalid_argument naming the preprocessor_config.json field at fault.
  void validate() const;
};

// get_resize_output_image_size for size {"shortest_edge": n}: (height, width), long edge floored.
std::pair<int64_t, int64_t> shortestEdgeSize(int64_t height, int64_t width, int64_t shortestEdge);

// Resized, cropped uint8 image [H, W, 3] (what PIL hands back before rescale/normalize).
at::Tensor clipResizeAndCrop(const at::Tensor& image, const ClipPreprocessOptions& options);

// uint8 [H, W, 3] images (any sizes) -> float32 pixel_values [n, 3, H', W'].
at::Tensor clipPreprocess(const std::vector<at::Tensor>& images, const ClipPreprocessOptions& options);

}  // namespace sdtune::image
