// LoRA tools (src/lora/tools/): low-rank factors of a weight difference (LoRA
// extraction from two models) or of an existing up @ down product (resize, and
// re-decomposing merged LoRAs), and the exact rank-concatenation of several
// adapters of one layer. Float32 SVD (torch::linalg_svd), one layer per call, so
// the caller's peak memory is its models plus one layer.
#include <napi.h>

#include <cmath>

#include "bindings/async.h"
#include "bindings/common.h"
#include "bindings/tensor_handle.h"

namespace sdtune {

namespace {

struct RankRule {
  int64_t rank = 1;
  double energy = 0;   // > 0: the smallest rank keeping this share of sum(sigma^2), capped by `rank`
  double clamp = 1;    // < 1: kohya's clamp of both factors at this quantile of |values| (inexact)
  double minDiff = 0;  // a difference with ||delta|| <= minDiff * ||base|| is skipped
};

struct LowRank {
  at::Tensor up, down, singular;  // singular: every sigma, float64, descending
  int64_t rank = 0;               // 0: skipped (no difference)
  double energy = 0;              // kept sigma^2 / total sigma^2
  double relativeNorm = 0;        // ||delta|| / ||base|| (extraction only)
};

// The rank the rule keeps of `singular` (sigma descending), never above the matrix's numerical
// rank (sigma > sigma_max * max(rows, cols) * float32 epsilon, as numpy's matrix_rank): singular
// values below it are float32 rounding noise of a lower-rank difference, not directions of it.
int64_t chooseRank(const at::Tensor& singular, const RankRule& rule, int64_t largestSide) {
  int64_t n = singular.numel();
  double cut = singular[0].item<double>() * static_cast<double>(largestSide) * 1.1920929e-7;
  n = std::max<int64_t>(singular.gt(cut).sum().item<int64_t>(), 1);
  int64_t k = std::min(rule.rank, n);
  if (rule.energy > 0) {
    at::Tensor share = singular.pow(2).cumsum(0) / singular.pow(2).sum();
    int64_t needed = share.lt(rule.energy - 1e-12).sum().item<int64_t>() + 1;
    k = std::min(k, std::min(needed, n));
  }
  return std::max<int64_t>(k, 1);
}

// kohya's extract_lora_from_models / resize_lora: clamp both factors at the quantile of their values.
void clampFactors(at::Tensor& up, at::Tensor& down, double quantile) {
  at::Tensor dist = at::cat({up.flatten(), down.flatten()});
  double hi = at::quantile(dist, quantile).item<double>();
  up = up.clamp(-hi, hi);
  down = down.clamp(-hi, hi);
}

// u [o, n], s [n], vh [n, i] of a 2-D matrix -> the kept factors in LoRA shapes (sigma into up, as kohya).
LowRank truncate(const at::Tensor& u, const at::Tensor& s, const at::Tensor& vh, at::IntArrayRef shape,
                 const RankRule& rule) {
  LowRank out;
  out.singular = s.to(at::kDouble);
  double total = out.singular.pow(2).sum().item<double>();
  if (total == 0) return out;
  int64_t k = chooseRank(out.singular, rule, std::max(u.size(0), vh.size(1)));
  out.rank = k;
  out.energy = out.singular.slice(0, 0, k).pow(2).sum().item<double>() / total;
  at::Tensor up = u.slice(1, 0, k) * s.slice(0, 0, k).unsqueeze(0);
  at::Tensor down = vh.slice(0, 0, k);
  if (rule.clamp < 1) clampFactors(up, down, rule.clamp);
  if (shape.size() == 4) {
    up = up.reshape({shape[0], k, 1, 1});
    down = down.reshape({k, shape[1], shape[2], shape[3]});
  }
  out.up = up.contiguous();
  out.down = down.contiguous();
  return out;
}

// The truncated SVD of tuned - base (float32); a conv weight is flattened to [out, in*kh*kw].
LowRank ofDifference(const at::Tensor& base, const at::Tensor& tuned, const RankRule& rule) {
  at::Tensor b = base.to(at::kFloat);
  at::Tensor delta = tuned.to(at::kFloat) - b;
  double deltaNorm = delta.norm().item<double>();
  double baseNorm = b.norm().item<double>();
  double relative = baseNorm > 0 ? deltaNorm / baseNorm : deltaNorm;
  if (deltaNorm == 0 || deltaNorm <= rule.minDiff * baseNorm) {
    LowRank skipped;
    skipped.singular = at::zeros({0}, at::kDouble);
    skipped.relativeNorm = relative;
    return skipped;
  }
  at::Tensor matrix = delta.reshape({delta.size(0), -1});
  auto [u, s, vh] = at::linalg_svd(matrix, /*full_matrices=*/false);
  LowRank out = truncate(u, s, vh, base.sizes(), rule);
  out.relativeNorm = relative;
  return out;
}

// The SVD of scale * up @ down without forming it: up = Qu Ru, down^T = Qd Rd, so the product is
// Qu (scale Ru Rd^T) Qd^T and only the small middle matrix needs an SVD.
LowRank ofFactors(const at::Tensor& upIn, const at::Tensor& downIn, double scale, const RankRule& rule) {
  at::Tensor up = upIn.to(at::kFloat).reshape({upIn.size(0), -1});
  at::Tensor down = downIn.to(at::kFloat).reshape({downIn.size(0), -1});
  auto [qu, ru] = at::linalg_qr(up);
  auto [qd, rd] = at::linalg_qr(down.t());
  at::Tensor middle = ru.matmul(rd.t()) * scale;
  auto [u, s, vh] = at::linalg_svd(middle, /*full_matrices=*/false);
  std::vector<int64_t> shape = {upIn.size(0), down.size(1)};
  if (downIn.dim() == 4) shape = {upIn.size(0), downIn.size(1), downIn.size(2), downIn.size(3)};
  return truncate(qu.matmul(u), s, vh.matmul(qd.t()), shape, rule);
}

RankRule parseRule(const Napi::Value& value) {
  Napi::Object o = requireObject(value, "options");
  RankRule rule;
  auto rank = getOptionalInt(o, "rank", "options");
  if (!rank || *rank < 1) throw std::invalid_argument("options.rank must be a positive integer");
  rule.rank = *rank;
  rule.energy = getOptionalNumber(o, "energy", "options").value_or(0);
  rule.clamp = getOptionalNumber(o, "clampQuantile", "options").value_or(1);
  rule.minDiff = getOptionalNumber(o, "minDiff", "options").value_or(0);
  if (!(rule.energy >= 0 && rule.energy <= 1)) throw std::invalid_argument("options.energy must be in [0, 1]");
  if (!(rule.clamp > 0 && rule.clamp <= 1)) throw std::invalid_argument("options.clampQuantile must be in (0, 1]");
  if (!(rule.minDiff >= 0) || !std::isfinite(rule.minDiff))
    throw std::invalid_argument("options.minDiff must be finite and >= 0");
  return rule;
}

Napi::Value wrapLowRank(Napi::Env env, LowRank& r) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("rank", Napi::Number::New(env, static_cast<double>(r.rank)));
  out.Set("energy", Napi::Number::New(env, r.energy));
  out.Set("relativeNorm", Napi::Number::New(env, r.relativeNorm));
  out.Set("singular", TensorHandle::wrap(env, r.singular));
  if (r.rank > 0) {
    out.Set("up", TensorHandle::wrap(env, r.up));
    out.Set("down", TensorHandle::wrap(env, r.down));
  }
  return out;
}

void checkWeight(const at::Tensor& t, const char* what) {
  if (!at::isFloatingType(t.scalar_type())) throw std::invalid_argument(std::string(what) + " must be floating");
  if (t.dim() != 2 && t.dim() != 4) throw std::invalid_argument(std::string(what) + " must be 2-D or 4-D");
}

// lowRankOfDifference(base, tuned, options) -> Promise<{rank, energy, relativeNorm, singular, up?, down?}>
Napi::Value lowRankOfDifference(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    at::Tensor base = TensorHandle::unwrap(info[0], "base");
    at::Tensor tuned = TensorHandle::unwrap(info[1], "tuned");
    checkWeight(base, "base");
    if (base.sizes() != tuned.sizes()) {
      throw std::invalid_argument("base and tuned shapes differ: " + c10::str(base.sizes()) + " vs " +
                                  c10::str(tuned.sizes()));
    }
    RankRule rule = parseRule(info[2]);
    return PromiseWorker<LowRank>::run(
        env, "sdtune:loraTools.lowRankOfDifference", [base, tuned, rule]() { return ofDifference(base, tuned, rule); },
        wrapLowRank);
  });
}

// lowRankOfProduct(up, down, scale, options) -> Promise<{rank, energy, singular, up, down}>
Napi::Value lowRankOfProduct(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    at::Tensor up = TensorHandle::unwrap(info[0], "up");
    at::Tensor down = TensorHandle::unwrap(info[1], "down");
    checkWeight(up, "up");
    checkWeight(down, "down");
    if (up.size(1) != down.size(0)) throw std::invalid_argument("up and down ranks differ");
    if (!info[2].IsNumber()) throw std::invalid_argument("scale must be a number");
    double scale = info[2].As<Napi::Number>().DoubleValue();
    RankRule rule = parseRule(info[3]);
    return PromiseWorker<LowRank>::run(
        env, "sdtune:loraTools.lowRankOfProduct",
        [up, down, scale, rule]() { return ofFactors(up, down, scale, rule); }, wrapLowRank);
  });
}

struct Concatenated {
  at::Tensor up, down;
};

// concat([{up, down, scale}...]) -> Promise<{up, down}>: sum_i scale_i up_i @ down_i as one float32
// adapter of rank sum(rank_i) (downs stacked, ups side by side, each up times its scale).
Napi::Value concat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guard(env, [&]() -> Napi::Value {
    if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0)
      throw std::invalid_argument("parts must be a non-empty array");
    Napi::Array parts = info[0].As<Napi::Array>();
    std::vector<at::Tensor> ups, downs;
    for (uint32_t i = 0; i < parts.Length(); i++) {
      Napi::Object part = requireObject(parts.Get(i), "parts[i]");
      at::Tensor up = TensorHandle::unwrap(part.Get("up"), "up");
      at::Tensor down = TensorHandle::unwrap(part.Get("down"), "down");
      double scale = getOptionalNumber(part, "scale", "parts[i]").value_or(1);
      checkWeight(up, "up");
      checkWeight(down, "down");
      if (up.size(1) != down.size(0)) throw std::invalid_argument("up and down ranks differ");
      ups.push_back(up.to(at::kFloat) * scale);
      downs.push_back(down.to(at::kFloat));
    }
    return PromiseWorker<Concatenated>::run(
        env, "sdtune:loraTools.concat",
        [ups, downs]() {
          return Concatenated{at::cat(ups, 1).contiguous(), at::cat(downs, 0).contiguous()};
        },
        [](Napi::Env env, Concatenated& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("up", TensorHandle::wrap(env, r.up));
          out.Set("down", TensorHandle::wrap(env, r.down));
          return out;
        });
  });
}

void initLoraTools(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = Napi::Object::New(env);
  ns.Set("lowRankOfDifference", Napi::Function::New(env, lowRankOfDifference));
  ns.Set("lowRankOfProduct", Napi::Function::New(env, lowRankOfProduct));
  ns.Set("concat", Napi::Function::New(env, concat));
  exports.Set("loraTools", ns);
}

}  // namespace

SDTUNE_REGISTER_BINDING(loraTools, initLoraTools);

}  // namespace sdtune
