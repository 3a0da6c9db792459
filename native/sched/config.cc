#include "sched/config.h"

#include <stdexcept>

namespace sdtune::sched {

namespace {

struct NamedSampler {
  const char* name;
  SamplerKind kind;
};

const std::vector<NamedSampler>& namedSamplers() {
  static const std::vector<NamedSampler> table = {
      {"ddpm", SamplerKind::DDPM},
      {"ddim", SamplerKind::DDIM},
      {"pndm", SamplerKind::PNDM},
      {"euler", SamplerKind::EulerDiscrete},
      {"euler_ancestral", SamplerKind::EulerAncestral},
      {"dpmpp_2m", SamplerKind::DPMSolverMultistep},
      {"dpmpp_2m_karras", SamplerKind::DPMSolverMultistep},
      {"dpm_multistep", SamplerKind::DPMSolverMultistep},
  };
  return table;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

const std::vector<std::string>& samplerNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& s : namedSamplers()) out.emplace_back(s.name);
    return out;
  }();
  return names;
}

const char* className(SamplerKind kind) {
  switch (kind) {
    case SamplerKind::DDPM: return "DDPMScheduler";
    case SamplerKind::DDIM: return "DDIMScheduler";
    case SamplerKind::PNDM: return "PNDMScheduler";
    case SamplerKind::EulerDiscrete: return "EulerDiscreteScheduler";
    case SamplerKind::EulerAncestral: return "EulerAncestralDiscreteScheduler";
    case SamplerKind::DPMSolverMultistep: return "DPMSolverMultistepScheduler";
  }
  return "?";
}

SamplerKind samplerKind(const std::string& name) {
  for (const auto& s : namedSamplers()) {
    if (name == s.name) return s.kind;
  }
  throw std::invalid_argument("unknown sampler \"" + name + "\"; valid samplers: " + joined(samplerNames()));
}

}  // namespace sdtune::sched
