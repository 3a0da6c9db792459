// The training data pipeline's fast path for JPEG files: libjpeg-turbo decodes straight at the
// smallest DCT scale (M/8) that still covers the resize, PIL-exact resampling (resample.h) takes
// it the rest of the way, and EXIF orientation, crop and flip are one gather into the output.
// A full-size decode is most of the time of a 1-4 MP photo; decoding at 1/2 or 1/4 scale skips
// most of it. What it cannot do as sharp does (CMYK, a non-sRGB ICC profile, a decoder warning,
// an image over the pixel limit) it declines, and the caller decodes with sharp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "image/resample.h"

namespace sdtune::image {

struct JpegRenderJob {
  // Size the oriented image is resized to, then the crop taken from it (oriented coordinates).
  int resizedWidth = 0;
  int resizedHeight = 0;
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
  bool flip = false;  // mirror left-right after the crop
  ResampleFilter filter = ResampleFilter::Lanczos;
  int64_t maxPixels = 0;  // of the stored image; 0: no limit
};

// True when the addon was built with libjpeg (otherwise renderJpeg always declines).
bool jpegAvailable();

// Packed RGB, job.height x job.width x 3; nothing when the image should go to sharp instead.
// Throws std::invalid_argument for a job whose crop lies outside the resized image.
std::optional<std::vector<uint8_t>> renderJpeg(const uint8_t* data, size_t size, const JpegRenderJob& job);

// The EXIF orientation (1..8) in a JPEG APP1 payload ("Exif\0\0" + TIFF); 1 when absent or invalid.
int exifOrientation(const uint8_t* app1, size_t size);

}  // namespace sdtune::image
