// Built with -ffp-contract=off (CMakeLists.txt): NumPy evaluates a*b + c as two
// rounded operations, so a fused multiply-add here would change the tables.
#include "sched/numpy_compat.h"

#include <cmath>
#include <stdexcept>

namespace sdtune::sched::np {

std::vector<double> linspace(double start, double stop, int64_t num) {
  if (num < 0) throw std::invalid_argument("linspace: num must be non-negative");
  std::vector<double> out(static_cast<size_t>(num));
  const int64_t div = num - 1;
  const double delta = stop - start;
  const double step = div > 0 ? delta / static_cast<double>(div) : 0.0;
  for (int64_t i = 0; i < num; ++i) {
    // div <= 0 (one value): NumPy multiplies by delta instead of an undefined step.
    double y = div > 0 ? static_cast<double>(i) * step : static_cast<double>(i) * delta;
    out[static_cast<size_t>(i)] = y + start;
  }
  if (num > 1) out.back() = stop;
  return out;
}

std::vector<double> arange(double start, double stop, double step) {
  if (step == 0) throw std::invalid_argument("arange: step must not be zero");
  double count = std::ceil((stop - start) / step);
  std::vector<double> out;
  if (!(count > 0)) return out;
  const auto length = static_cast<size_t>(count);
  out.resize(length);
  out[0] = start;
  if (length == 1) return out;
  out[1] = start + step;
  const double delta = out[1] - out[0];  // NumPy's fill() re-derives the step from the first two values
  for (size_t i = 2; i < length; ++i) out[i] = start + static_cast<double>(i) * delta;
  return out;
}

double round(double x) {
  return std::nearbyint(x);  // the default rounding mode rounds half to even, like np.rint
}

double interpIndex(double x, const std::vector<double>& fp) {
  const auto n = static_cast<int64_t>(fp.size());
  if (n == 0) throw std::invalid_argument("interp: empty table");
  if (std::isnan(x)) return x;
  if (x < 0) return fp.front();
  if (x >= static_cast<double>(n - 1)) return fp.back();
  const auto j = static_cast<int64_t>(std::floor(x));
  const double low = fp[static_cast<size_t>(j)];
  if (x == static_cast<double>(j)) return low;
  const double high = fp[static_cast<size_t>(j + 1)];
  const double slope = (high - low) / 1.0;  // xp[j + 1] - xp[j] == 1
  double y = slope * (x - static_cast<double>(j)) + low;
  if (std::isnan(y)) {
    y = slope * (x - static_cast<double>(j + 1)) + high;
    if (std::isnan(y) && low == high) y = low;
  }
  return y;
}

double sigmaToT(double sigma, const std::vector<float>& logSigmas) {
  const auto n = static_cast<int64_t>(logSigmas.size());
  if (n < 2) throw std::invalid_argument("sigmaToT: the sigma table needs at least two entries");
  // log_sigma is a float64 scalar; against a float32 array NumPy computes in float32.
  const auto logSigma = static_cast<float>(std::log(std::max(sigma, 1e-10)));
  // low_idx: the last index whose log sigma is <= log_sigma (0 when none), at most n - 2.
  int64_t low = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (logSigma - logSigmas[static_cast<size_t>(i)] >= 0.0f) low = i;
  }
  low = std::min(low, n - 2);
  const int64_t high = low + 1;
  const float lowValue = logSigmas[static_cast<size_t>(low)];
  const float highValue = logSigmas[static_cast<size_t>(high)];
  float w = (lowValue - logSigma) / (lowValue - highValue);
  w = std::min(std::max(w, 0.0f), 1.0f);
  // (1 - w) stays float32; multiplying by the int64 index arrays promotes to float64.
  const float oneMinusW = 1.0f - w;
  return static_cast<double>(oneMinusW) * static_cast<double>(low) + static_cast<double>(w) * static_cast<double>(high);
}

std::vector<double> karrasSigmas(double sigmaMin, double sigmaMax, int64_t num) {
  const double rho = 7.0;
  const std::vector<double> ramp = linspace(0, 1, num);
  const double minInvRho = std::pow(sigmaMin, 1 / rho);
  const double maxInvRho = std::pow(sigmaMax, 1 / rho);
  std::vector<double> out(ramp.size());
  for (size_t i = 0; i < ramp.size(); ++i) {
    double base = maxInvRho + ramp[i] * (minInvRho - maxInvRho);
    out[i] = std::pow(base, rho);
  }
  return out;
}

}  // namespace sdtune::sched::np
