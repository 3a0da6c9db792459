// The few NumPy (1.24) routines diffusers builds its timestep and sigma tables
// with, reproduced to the last bit: the tables must match exactly, and NumPy's
// arange/linspace/interp/round have specific rounding behaviour.
#pragma once

#include <cstdint>
#include <vector>

namespace sdtune::sched::np {

// np.linspace(start, stop, num) in float64 (endpoint included, last value exactly `stop`).
std::vector<double> linspace(double start, double stop, int64_t num);

// np.arange(start, stop, step) with a float step: length ceil((stop - start) / step),
// values start, start + step, then start + i * ((start + step) - start).
std::vector<double> arange(double start, double stop, double step);

// np.round: round half to even.
double round(double x);

// np.interp(x, arange(len(fp)), fp) for a table indexed 0..n-1.
double interpIndex(double x, const std::vector<double>& fp);

// diffusers' _sigma_to_t(sigma, log_sigmas) with log_sigmas a float32 table. NumPy's
// value-based casting makes the distances and the weight float32 arithmetic.
double sigmaToT(double sigma, const std::vector<float>& logSigmas);

// diffusers' _convert_to_karras: rho = 7 ramp from sigmaMax down to sigmaMin (float64).
std::vector<double> karrasSigmas(double sigmaMin, double sigmaMax, int64_t num);

}  // namespace sdtune::sched::np
