#!/usr/bin/python3
"""Golden values for DoRA, LoHa and LoKr adapters, computed by the reference code itself.

Run with Debian's /usr/bin/python3 (torch 1.13) from the repository root:

    /usr/bin/python3 scripts/golden/lora_types.py FIXTURES LYCORIS_GIT PEFT_GIT test/golden/lora_types.safetensors

FIXTURES is the shared fixtures folder; LYCORIS_GIT and PEFT_GIT are git directories of
github.com/KohakuBlueleaf/LyCORIS and github.com/huggingface/peft (the commits used are written
into the output's metadata). Nothing of theirs is copied here: their source files are read
from git at run time and executed.

- LoHa and LoKr: LyCORIS' plain-torch functional code (lycoris/functional/{general,loha,lokr}.py),
  loaded as a package on its own (lycoris/__init__.py is not run, it needs more than torch).
  The delta weight is their diff_weight(); the output is base + F.linear/F.conv2d(x, delta)
  (how their modules apply it outside bypass mode); gradients come from their own autograd
  (LoHa's HadaWeight backward).
- DoRA: peft's src/peft/tuners/lora/dora.py (DoraLinearLayer / DoraConv2dLayer), executed with
  two minimal stubs for the only peft imports it needs: dequantize_module_weight (returns the
  plain weight, what peft does for a non-quantized layer) and gather_params_ctx (a no-op
  context, what peft does without DeepSpeed); transpose is peft's own from utils/other.py
  re-implemented in one line (it is `weight.T if fan_in_fan_out else weight`). The merged weight
  follows peft's Linear.merge / Conv2d.merge (layer.py): magnitude / ||W + dW|| * (W + dW).

Every case runs on one fixture UNet layer (a Linear and a Conv2d), with seeded factors and a
seeded input x and output gradient g; loss = sum(y * g). Stored per case:
  <case>.x, <case>.g, <case>.<factor> (inputs), <case>.y (output), <case>.grad.<factor>,
  <case>.merged (W + delta at multiplier 1), and in metadata the layer path, alpha and options.
"""
import contextlib
import importlib.util
import json
import struct
import subprocess
import sys
import types

import torch
import torch.nn.functional as F

FIXTURES, LYCORIS_GIT, PEFT_GIT, OUT = sys.argv[1:5]

LINEAR = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"
CONV = "down_blocks.0.resnets.0.conv1"


def git_show(git_dir, path):
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"HEAD:{path}"], check=True,
                          capture_output=True, text=True).stdout


def git_head(git_dir):
    return subprocess.run(["git", "--git-dir", git_dir, "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def load_module(name, source):
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


# ---- safetensors (no safetensors package on this python): header length, JSON header, raw data

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        assert info["dtype"] == "F32", key
        a, b = info["data_offsets"]
        out[key] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(info["shape"]).clone()
    return out


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for key in sorted(tensors):
        t = tensors[key].detach().to(torch.float32).contiguous()
        raw = t.numpy().tobytes()
        header[key] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for raw in blobs:
            f.write(raw)


# ---- the reference code

lycoris = types.ModuleType("lycoris")
lycoris.__path__ = []
sys.modules["lycoris"] = lycoris
functional = types.ModuleType("lycoris.functional")
functional.__path__ = []
sys.modules["lycoris.functional"] = functional
load_module("lycoris.functional.general", git_show(LYCORIS_GIT, "lycoris/functional/general.py"))
loha = load_module("lycoris.functional.loha", git_show(LYCORIS_GIT, "lycoris/functional/loha.py"))
lokr = load_module("lycoris.functional.lokr", git_show(LYCORIS_GIT, "lycoris/functional/lokr.py"))

for name in ["peft", "peft.utils"]:
    stub = types.ModuleType(name)
    stub.__path__ = []
    sys.modules[name] = stub
integrations = types.ModuleType("peft.utils.integrations")
integrations.dequantize_module_weight = lambda module: module.weight  # non-quantized layer
integrations.gather_params_ctx = lambda *args, **kwargs: contextlib.nullcontext()  # no DeepSpeed
sys.modules["peft.utils.integrations"] = integrations
other = types.ModuleType("peft.utils.other")
other.transpose = lambda weight, fan_in_fan_out: weight.T if fan_in_fan_out else weight
sys.modules["peft.utils.other"] = other
dora = load_module("peft.tuners.lora.dora", git_show(PEFT_GIT, "src/peft/tuners/lora/dora.py"))

# ---- the fixture layers

unet = read_safetensors(f"{FIXTURES}/tiny-sd/unet/diffusion_pytorch_model.safetensors")
torch.manual_seed(20240219)
out, meta = {}, {}


def base_layer(path):
    w, b = unet[f"{path}.weight"], unet[f"{path}.bias"]
    if w.dim() == 2:
        layer = torch.nn.Linear(w.shape[1], w.shape[0])
        x = torch.randn(2, 3, w.shape[1])
    else:
        layer = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2)
        x = torch.randn(1, w.shape[1], 5, 4)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    return layer, x


def apply_delta(layer, x, delta):
    if delta.dim() == 2:
        return layer(x) + F.linear(x, delta)
    return layer(x) + F.conv2d(x, delta, padding=layer.padding)


def record(case, path, layer, x, y, factors, merged, info):
    g = torch.randn_like(y)
    (y * g).sum().backward()
    out[f"{case}.x"], out[f"{case}.g"], out[f"{case}.y"] = x, g, y.detach()
    out[f"{case}.merged"] = merged.detach()
    for name, t in factors.items():
        out[f"{case}.{name}"] = t.detach()
        out[f"{case}.grad.{name}"] = t.grad
    meta[case] = json.dumps({"path": path, **info})


def loha_case(case, path, rank, alpha):
    layer, x = base_layer(path)
    w = layer.weight
    flat_in = w[0].numel()
    f = {
        "hada_w1_a": torch.randn(w.shape[0], rank) * 0.3,
        "hada_w1_b": torch.randn(rank, flat_in) * 0.3,
        "hada_w2_a": torch.randn(w.shape[0], rank) * 0.3,
        "hada_w2_b": torch.randn(rank, flat_in) * 0.3,
    }
    for t in f.values():
        t.requires_grad_(True)
    # functional order (gamma a tensor: HadaWeight saves it for backward, as LohaModule passes it): (w1d, w1u, w2d, w2u, t1, t2) = (w1_b, w1_a, w2_b, w2_a, None, None)
    d = loha.diff_weight(f["hada_w1_b"], f["hada_w1_a"], f["hada_w2_b"], f["hada_w2_a"], None, None,
                         gamma=torch.tensor(alpha / rank)).reshape(w.shape)
    y = apply_delta(layer, x, d)
    record(case, path, layer, x, y, f, w + d, {"type": "loha", "alpha": alpha, "rank": rank})


def lokr_case(case, path, rank, alpha, factor, decompose_both):
    layer, x = base_layer(path)
    w = layer.weight
    shapes = lokr.weight_gen(w, rank, tucker=False, factor=factor, decompose_both=decompose_both)
    names = ["lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"]
    f = {}
    for name, t in zip(names, shapes[:6]):
        if t is not None:
            f[name] = (torch.randn(t.shape) * 0.3).requires_grad_(True)
    # diff_weight's gamma is alpha (it divides by the rank itself)
    d = lokr.diff_weight(*[f.get(n) for n in names], None, gamma=alpha).reshape(w.shape)
    y = apply_delta(layer, x, d)
    info = {"type": "lokr", "alpha": alpha, "rank": rank, "factor": factor, "decompose_both": decompose_both}
    record(case, path, layer, x, y, f, w + d, info)


def dora_case(case, path, rank, alpha):
    layer, x = base_layer(path)
    w = layer.weight
    conv = w.dim() == 4
    a = torch.nn.Conv2d(w.shape[1], rank, w.shape[2], padding=w.shape[2] // 2, bias=False) if conv \
        else torch.nn.Linear(w.shape[1], rank, bias=False)
    b = torch.nn.Conv2d(rank, w.shape[0], 1, bias=False) if conv else torch.nn.Linear(rank, w.shape[0], bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.randn(a.weight.shape) * 0.3)
        b.weight.copy_(torch.randn(b.weight.shape) * 0.3)
    scaling = alpha / rank
    magnitude = dora.DoraConv2dLayer(fan_in_fan_out=False) if conv else dora.DoraLinearLayer(fan_in_fan_out=False)
    magnitude.update_layer(base_layer=layer, lora_A=a.weight, lora_B=b.weight, scaling=scaling)
    with torch.no_grad():  # a trained magnitude differs from the norm
        magnitude.weight.mul_(1 + 0.2 * torch.randn(magnitude.weight.shape))
    base = layer(x)
    y = base + magnitude(x, lora_A=a, lora_B=b, scaling=scaling, base_layer=layer, base_result=base)
    # peft's merge (layer.py): magnitude / ||W + dW|| * (W + dW), dW = scaling * B A
    delta = (b.weight.flatten(1) @ a.weight.flatten(1)).reshape(w.shape) * scaling
    norm = magnitude.get_weight_norm(w, delta, scaling=1).detach()
    factor = (magnitude.weight / norm).reshape(w.shape[0], *[1] * (w.dim() - 1))
    merged = factor * (w + delta)
    f = {"lora_A": a.weight, "lora_B": b.weight, "magnitude": magnitude.weight}
    record(case, path, layer, x, y, f, merged, {"type": "dora", "alpha": alpha, "rank": rank})


loha_case("loha_linear", LINEAR, rank=4, alpha=2.0)
loha_case("loha_conv", CONV, rank=3, alpha=3.0)
lokr_case("lokr_linear", LINEAR, rank=1, alpha=1.0, factor=4, decompose_both=True)
lokr_case("lokr_conv", CONV, rank=2, alpha=4.0, factor=-1, decompose_both=False)
lokr_case("lokr_full", LINEAR, rank=16, alpha=3.0, factor=8, decompose_both=False)
dora_case("dora_linear", LINEAR, rank=4, alpha=8.0)
dora_case("dora_conv", CONV, rank=2, alpha=2.0)

meta["lycoris_commit"] = git_head(LYCORIS_GIT)
meta["peft_commit"] = git_head(PEFT_GIT)
meta["torch"] = torch.__version__
write_safetensors(OUT, out, meta)
print(f"wrote {len(out)} tensors to {OUT}")
