// AutoencoderKL (diffusers autoencoders/autoencoder_kl.py + vae.py) with the
// checkpoint names of a diffusers vae/ folder: encoder.*, decoder.*, quant_conv,
// post_quant_conv. Every GroupNorm here uses eps 1e-6.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "nn/activation.h"
#include "nn/attention.h"
#include "nn/linear.h"
#include "nn/resnet.h"

namespace sdtune::models {

struct VAEOptions {
  int64_t inChannels = 3;
  int64_t outChannels = 3;
  int64_t latentChannels = 4;
  std::vector<int64_t> blockOutChannels;
  std::vector<std::string> downBlockTypes;  // DownEncoderBlock2D
  std::vector<std::string> upBlockTypes;    // UpDecoderBlock2D
  int64_t layersPerBlock = 1;
  int64_t normNumGroups = 32;
  std::string actFn = "silu";
  double scalingFactor = 0.18215;
  bool midBlockAddAttention = true;

  void validate() const;  // throws naming the field and value
};

// UNetMidBlock2D as the VAE uses it: resnet, (self-attention, resnet), no time embedding.
class VAEMidBlockImpl : public torch::nn::Module {
 public:
  VAEMidBlockImpl(int64_t channels, int64_t groups, nn::Activation act, bool addAttention);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(VAEMidBlock);

// DownEncoderBlock2D (resnets + asymmetric-pad downsampler) and UpDecoderBlock2D (resnets + upsampler).
class VAEBlockImpl : public torch::nn::Module {
 public:
  enum class Kind { Down, Up };
  VAEBlockImpl(Kind kind, int64_t in, int64_t out, int64_t numLayers, bool resample, int64_t groups,
               nn::Activation act);
  torch::Tensor forward(const torch::Tensor& x);
  Kind kind;
  torch::nn::ModuleList resnets{nullptr}, downsamplers{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(VAEBlock);

class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const VAEOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [B, 3, H, W] -> [B, 2*latent, H/f, W/f]
  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  VAEMidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  nn::Activation act = nn::Activation::SiLU;
};
TORCH_MODULE(Encoder);

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const VAEOptions& options);
  torch::Tensor forward(const torch::Tensor& z);  // [B, latent, h, w] -> [B, 3, h*f, w*f]
  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  VAEMidBlock mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  nn::Activation act = nn::Activation::SiLU;
};
TORCH_MODULE(Decoder);

// The diagonal Gaussian posterior of encode().
struct LatentDistribution {
  torch::Tensor moments;  // [B, 2*latent, h, w] = quant_conv output
  torch::Tensor mean;     // [B, latent, h, w]
  torch::Tensor logvar;   // clamped to [-30, 20]
  torch::Tensor std;      // exp(0.5 * logvar)
};

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLImpl(const VAEOptions& options);
  // Called after each image with (done, total); may throw to stop (cancellation).
  using ImageCallback = std::function<void(int64_t, int64_t)>;
  // images in [-1, 1]: [B, 3, H, W]. Runs one image at a time so memory stays bounded.
  LatentDistribution encode(const torch::Tensor& images, const ImageCallback& onImage = nullptr);
  // latents (unscaled): [B, latent, h, w] -> images [B, 3, h*f, w*f], one image at a time.
  torch::Tensor decode(const torch::Tensor& latents, const ImageCallback& onImage = nullptr);
  // Tiled decode with overlap blending (diffusers tiled_decode): tileLatentSize is the
  // latent tile edge, overlap the fraction of a tile shared with its neighbour.
  torch::Tensor decodeTiled(const torch::Tensor& latents, int64_t tileLatentSize, double overlap = 0.25);
  // Spatial down/up-sampling factor (2^(blocks-1)).
  int64_t scaleFactor() const;

  VAEOptions options;
  Encoder encoder{nullptr};
  Decoder decoder{nullptr};
  nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};
TORCH_MODULE(AutoencoderKL);

}  // namespace sdtune::models
