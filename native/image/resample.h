// PIL's convolution resampling (Image.resize with BOX/BILINEAR/HAMMING/BICUBIC/LANCZOS)
// for 8-bit interleaved images, reproduced bit for bit: transformers' image processors
// resize through PIL, so CLIP score inputs are only exact if this matches PIL.
//
// What makes it PIL and not "a bicubic": the filter support widens by the downscale
// factor (antialiasing), coefficients are normalised per output pixel, then turned into
// 22-bit fixed point; the separable passes run horizontal first (only over the rows the
// vertical pass needs), each rounding and clamping to uint8.
// Written from Pillow's behaviour (src/libImaging/Resample.c, Pillow 9.x); no torch here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sdtune::image {

// Values are PIL's Image.Resampling numbers (NEAREST = 0 is not a convolution filter).
enum class ResampleFilter : int { Lanczos = 1, Bilinear = 2, Bicubic = 3, Box = 4, Hamming = 5 };

// "bicubic", "bilinear", ... or PIL's number as a string; throws std::invalid_argument naming the choices.
ResampleFilter parseResampleFilter(const std::string& name);
ResampleFilter resampleFilterFromPil(int64_t value);

// One pass's taps: for output i, `count[i]` input samples from `first[i]`, weights in
// `weights[i * taps ...]` as PIL's fixed point (value * 2^22, rounded half away from zero).
struct ResampleCoefficients {
  int taps = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

// PIL precompute_coeffs + normalize_coeffs_8bpc for resizing [in0, in1) of `inSize` samples to `outSize`.
ResampleCoefficients resampleCoefficients(int inSize, double in0, double in1, int outSize, ResampleFilter filter);

// PIL Image.resize((outWidth, outHeight), filter) on a packed uint8 image (height x width x channels,
// channels 1..4, each channel independent: PIL premultiplies alpha for RGBA/LA first, callers with
// alpha must do the same). `dst` holds outHeight * outWidth * channels bytes.
void resample8(const uint8_t* src, int width, int height, int channels, uint8_t* dst, int outWidth, int outHeight,
               ResampleFilter filter);

}  // namespace sdtune::image
