// PIL-exact 8-bit resampling; see resample.h. Built with -ffp-contract=off (CMakeLists.txt):
// the filter weights must round like PIL's own (unfused) double arithmetic.
#include "image/resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace sdtune::image {

namespace {

constexpr double kPi = 3.14159265358979323846;
// 8 bits of result, 2 for overflow of negative lobes / sums above 1: PIL's PRECISION_BITS.
constexpr int kPrecisionBits = 32 - 8 - 2;

double boxFilter(double x) {
  return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
}

double bilinearFilter(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hammingFilter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * kPi;
  // PIL writes these constants as floats; keep their float rounding.
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));
}

// Keys' cubic convolution with a = -0.5, evaluated in PIL's operation order.
double bicubicFilter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x = x * kPi;
  return std::sin(x) / x;
}

double lanczosFilter(double x) {
  return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
}

struct FilterDef {
  double (*fn)(double);
  double support;
};

FilterDef filterDef(ResampleFilter filter) {
  switch (filter) {
    case ResampleFilter::Box: return {boxFilter, 0.5};
    case ResampleFilter::Bilinear: return {bilinearFilter, 1.0};
    case ResampleFilter::Hamming: return {hammingFilter, 1.0};
    case ResampleFilter::Bicubic: return {bicubicFilter, 2.0};
    case ResampleFilter::Lanczos: return {lanczosFilter, 3.0};
  }
  throw std::invalid_argument("unknown resample filter");
}

// PIL's clip8: the fixed-point sum shifted down (arithmetic shift = floor), clamped to a byte.
inline uint8_t clip8(int32_t sum) {
  int32_t v = sum >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Horizontal pass over rows [rowBegin, rowBegin + rows) of src -> rows x outWidth. The channel
// count is a template argument so the per-tap loop unrolls (the data pipeline's RGB is the hot case).
template <int Channels>
void horizontalRows(const uint8_t* src, int width, int rowBegin, int rows, uint8_t* dst, int outWidth,
                    const ResampleCoefficients& c) {
  const int32_t half = 1 << (kPrecisionBits - 1);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = src + static_cast<size_t>(rowBegin + y) * width * Channels;
    uint8_t* out = dst + static_cast<size_t>(y) * outWidth * Channels;
    for (int x = 0; x < outWidth; ++x) {
      const int32_t* k = c.weights.data() + static_cast<size_t>(x) * c.taps;
      const uint8_t* s = in + static_cast<size_t>(c.first[x]) * Channels;
      int32_t sum[Channels];
      for (int ch = 0; ch < Channels; ++ch) sum[ch] = half;
      for (int t = 0; t < c.count[x]; ++t) {
        for (int ch = 0; ch < Channels; ++ch) sum[ch] += static_cast<int32_t>(s[t * Channels + ch]) * k[t];
      }
      for (int ch = 0; ch < Channels; ++ch) out[x * Channels + ch] = clip8(sum[ch]);
    }
  }
}

void horizontalPass(const uint8_t* src, int width, int channels, int rowBegin, int rows, uint8_t* dst, int outWidth,
                    const ResampleCoefficients& c) {
  switch (channels) {
    case 1: return horizontalRows<1>(src, width, rowBegin, rows, dst, outWidth, c);
    case 2: return horizontalRows<2>(src, width, rowBegin, rows, dst, outWidth, c);
    case 3: return horizontalRows<3>(src, width, rowBegin, rows, dst, outWidth, c);
    default: return horizontalRows<4>(src, width, rowBegin, rows, dst, outWidth, c);
  }
}

// Vertical pass: src has `height` rows (already offset so c.first is relative to it) -> outHeight rows.
// Whole rows are accumulated tap by tap (integer sums are exact, so the order does not matter).
// Built for AVX2 too (chosen at load): SSE2 has no 32-bit multiply, so the baseline build of this
// loop stays scalar.
__attribute__((target_clones("avx2", "default"))) void verticalPass(const uint8_t* src, int width, int channels,
                                                                    uint8_t* dst, int outHeight,
                                                                    const ResampleCoefficients& c, int rowOffset) {
  const int32_t half = 1 << (kPrecisionBits - 1);
  const size_t stride = static_cast<size_t>(width) * channels;
  std::vector<int32_t> sums(stride);
  for (int y = 0; y < outHeight; ++y) {
    const int32_t* k = c.weights.data() + static_cast<size_t>(y) * c.taps;
    const uint8_t* base = src + static_cast<size_t>(c.first[y] - rowOffset) * stride;
    std::fill(sums.begin(), sums.end(), half);
    for (int t = 0; t < c.count[y]; ++t) {
      const uint8_t* row = base + t * stride;
      const int32_t w = k[t];
      for (size_t i = 0; i < stride; ++i) sums[i] += static_cast<int32_t>(row[i]) * w;
    }
    uint8_t* out = dst + static_cast<size_t>(y) * stride;
    for (size_t i = 0; i < stride; ++i) out[i] = clip8(sums[i]);
  }
}

}  // namespace

ResampleFilter parseResampleFilter(const std::string& name) {
  if (name == "bicubic" || name == "3") return ResampleFilter::Bicubic;
  if (name == "bilinear" || name == "2") return ResampleFilter::Bilinear;
  if (name == "lanczos" || name == "1") return ResampleFilter::Lanczos;
  if (name == "box" || name == "4") return ResampleFilter::Box;
  if (name == "hamming" || name == "5") return ResampleFilter::Hamming;
  throw std::invalid_argument("resample filter must be one of bicubic, bilinear, lanczos, box, hamming (got \"" + name +
                              "\"); nearest is not a convolution filter");
}

ResampleFilter resampleFilterFromPil(int64_t value) {
  if (value >= 1 && value <= 5) return static_cast<ResampleFilter>(value);
  throw std::invalid_argument("resample " + std::to_string(value) +
                              " is not a PIL convolution filter (1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)");
}

ResampleCoefficients resampleCoefficients(int inSize, double in0, double in1, int outSize, ResampleFilter filter) {
  if (inSize <= 0 || outSize <= 0) throw std::invalid_argument("resample: sizes must be positive");
  const FilterDef f = filterDef(filter);
  const double scale = (in1 - in0) / outSize;
  const double filterScale = scale < 1.0 ? 1.0 : scale;  // widen the kernel only when shrinking
  const double support = f.support * filterScale;
  ResampleCoefficients c;
  c.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(outSize);
  c.count.resize(outSize);
  c.weights.assign(static_cast<size_t>(outSize) * c.taps, 0);
  std::vector<double> w(c.taps);
  for (int i = 0; i < outSize; ++i) {
    const double center = in0 + (i + 0.5) * scale;
    const double ss = 1.0 / filterScale;
    // (int) truncates like PIL's cast; negatives clamp to 0 either way.
    int lo = static_cast<int>(center - support + 0.5);
    if (lo < 0) lo = 0;
    int hi = static_cast<int>(center + support + 0.5);
    if (hi > inSize) hi = inSize;
    const int n = hi - lo;
    double total = 0.0;
    for (int t = 0; t < n; ++t) {
      w[t] = f.fn((t + lo - center + 0.5) * ss);
      total += w[t];
    }
    int32_t* k = c.weights.data() + static_cast<size_t>(i) * c.taps;
    for (int t = 0; t < n; ++t) {
      const double v = total != 0.0 ? w[t] / total : w[t];
      // Round half away from zero into 22-bit fixed point, as normalize_coeffs_8bpc does.
      k[t] = v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                   : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    c.first[i] = lo;
    c.count[i] = n;
  }
  return c;
}

void resample8(const uint8_t* src, int width, int height, int channels, uint8_t* dst, int outWidth, int outHeight,
               ResampleFilter filter) {
  if (channels < 1 || channels > 4) throw std::invalid_argument("resample: channels must be 1..4");
  if (width <= 0 || height <= 0 || outWidth <= 0 || outHeight <= 0) {
    throw std::invalid_argument("resample: sizes must be positive (" + std::to_string(width) + "x" +
                                std::to_string(height) + " -> " + std::to_string(outWidth) + "x" +
                                std::to_string(outHeight) + ")");
  }
  const bool horizontal = outWidth != width;
  const bool vertical = outHeight != height;
  if (!horizontal && !vertical) {
    std::memcpy(dst, src, static_cast<size_t>(width) * height * channels);
    return;
  }
  const ResampleCoefficients vc = resampleCoefficients(height, 0.0, height, outHeight, filter);
  if (!horizontal) {
    verticalPass(src, width, channels, dst, outHeight, vc, 0);
    return;
  }
  const ResampleCoefficients hc = resampleCoefficients(width, 0.0, width, outWidth, filter);
  // Only the source rows the vertical pass reads go through the horizontal pass.
  const int rowFirst = vc.first[0];
  const int rowLast = vc.first[outHeight - 1] + vc.count[outHeight - 1];
  if (!vertical) {
    horizontalPass(src, width, channels, 0, height, dst, outWidth, hc);
    return;
  }
  std::vector<uint8_t> temp(static_cast<size_t>(rowLast - rowFirst) * outWidth * channels);  // [rows, outW, C]
  horizontalPass(src, width, channels, rowFirst, rowLast - rowFirst, temp.data(), outWidth, hc);
  verticalPass(temp.data(), outWidth, channels, dst, outHeight, vc, rowFirst);
}

}  // namespace sdtune::image
