#!/usr/bin/env python3
"""Golden optimizer steps for test/optimizers.test.ts, from the reference implementations.

Writes test/golden/optimizers.json: a few float32 parameters (1-D, 2-D, 4-D, and an all-zero
2-D one like a fresh LoRA "up" matrix), four steps of fixed gradients, and for each case (an
optimizer with reference keyword arguments, weight decay on) the parameters after every step.
The learning rate changes from step to step (a scheduler's factors times the base lr), set
on the param group before each step as torch's LambdaLR does.

The references are run, not re-implemented. Fetch them and pass their files:

    /usr/bin/python3 scripts/golden/optimizers.py \\
        --prodigy <konstmish/prodigy>/prodigyopt/prodigy.py \\
        --lion <lucidrains/lion-pytorch>/lion_pytorch/lion_pytorch.py \\
        --adafactor <huggingface/transformers>/src/transformers/optimization.py

prodigy.py and lion_pytorch.py import only torch and the standard library, so they are
loaded as modules. transformers is not installed and optimization.py imports the rest of
the package (schedulers, trainer utilities), so only its `class Adafactor` is taken from the
file (with ast) and executed in a namespace holding the three names it uses: math, torch
and torch.optim.Optimizer. Nothing else of transformers is stubbed or changed.
Used for the committed file: torch 1.13 (Debian 12's /usr/bin/python3), prodigy at
3efb213ee8af5a6bf76f28726398433a847b38e9, lion-pytorch at 6a74fdc0ba572ab5683dc0270c66c20ecbc02d09,
transformers at 005edacb6b5dabbf0843e92c6623de9e07ca6241.
"""
import argparse
import ast
import importlib.util
import json
import math
import os

import torch
from torch.optim import Optimizer

SHAPES = {"linear.weight": [6, 5], "linear.bias": [5], "conv.weight": [3, 2, 2, 2], "lora_up.weight": [4, 3]}
STEPS = 4
LR_FACTORS = [1.0, 0.5, 0.75, 1.0]  # a schedule's multipliers, step by step

# name, reference class, base lr (None: Adafactor computes its own), keyword arguments.
CASES = [
    ("prodigy-defaults", "Prodigy", 1.0, {"weight_decay": 0.01}),
    (
        "prodigy-kohya",
        "Prodigy",
        1.0,
        {
            "weight_decay": 0.01,
            "betas": [0.9, 0.99],
            "use_bias_correction": True,
            "safeguard_warmup": True,
            "d_coef": 2.0,
        },
    ),
    (
        "prodigy-coupled-no-momentum",
        "Prodigy",
        0.5,
        {"weight_decay": 0.05, "betas": [0.0, 0.999], "decouple": False, "slice_p": 2, "growth_rate": 1.02, "d0": 1e-4},
    ),
    ("adafactor-relative-step", "Adafactor", None, {"weight_decay": 0.01}),
    ("adafactor-warmup-init", "Adafactor", None, {"weight_decay": 0.01, "warmup_init": True, "beta1": 0.9}),
    (
        "adafactor-kohya",
        "Adafactor",
        1e-3,
        {"weight_decay": 0.01, "relative_step": False, "scale_parameter": False, "warmup_init": False},
    ),
    (
        "adafactor-scaled-external-lr",
        "Adafactor",
        1e-2,
        {
            "weight_decay": 0.02,
            "relative_step": False,
            "scale_parameter": True,
            "beta1": 0.8,
            "decay_rate": -0.5,
            "clip_threshold": 0.5,
            "eps": [1e-30, 2e-3],
        },
    ),
    ("lion-defaults", "Lion", 1e-4, {"weight_decay": 0.1}),
    ("lion-betas", "Lion", 3e-3, {"weight_decay": 1.0, "betas": [0.95, 0.98]}),
]


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_adafactor(path):
    with open(path, encoding="utf8") as f:
        tree = ast.parse(f.read())
    found = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Adafactor"]
    if len(found) != 1:
        raise SystemExit(f"{path}: no single `class Adafactor`")
    namespace = {"math": math, "torch": torch, "Optimizer": Optimizer}
    exec(compile(ast.Module(body=found, type_ignores=[]), path, "exec"), namespace)
    return namespace["Adafactor"]


def inputs():
    gen = torch.Generator().manual_seed(1234)
    init = {}
    for name, shape in SHAPES.items():
        init[name] = torch.zeros(shape) if name == "lora_up.weight" else torch.randn(shape, generator=gen) * 0.5
    grads = [{name: torch.randn(shape, generator=gen) * 0.1 for name, shape in SHAPES.items()} for _ in range(STEPS)]
    return init, grads


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def run_case(cls, lr, kwargs, init, grads):
    params = {name: torch.nn.Parameter(t.clone()) for name, t in init.items()}
    call = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if lr is not None:
        call["lr"] = lr
    optimizer = cls(list(params.values()), **call)
    after = []
    for step in range(STEPS):
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr * LR_FACTORS[step]
        for name, p in params.items():
            p.grad = grads[step][name].clone()
        optimizer.step()
        after.append({name: flat(p) for name, p in params.items()})
    return after


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prodigy", required=True, help="prodigyopt/prodigy.py of konstmish/prodigy")
    parser.add_argument("--lion", required=True, help="lion_pytorch/lion_pytorch.py of lucidrains/lion-pytorch")
    parser.add_argument("--adafactor", required=True, help="src/transformers/optimization.py (or a file with its class)")
    args = parser.parse_args()
    classes = {
        "Prodigy": load_module(args.prodigy, "prodigy_reference").Prodigy,
        "Lion": load_module(args.lion, "lion_reference").Lion,
        "Adafactor": load_adafactor(args.adafactor),
    }
    init, grads = inputs()
    out = {
        "about": "scripts/golden/optimizers.py: reference optimizers (prodigyopt.Prodigy, lion_pytorch.Lion, "
        "transformers Adafactor) on float32 parameters, torch " + torch.__version__,
        "shapes": SHAPES,
        "lr_factors": LR_FACTORS,
        "init": {name: flat(t) for name, t in init.items()},
        "grads": [{name: flat(t) for name, t in step.items()} for step in grads],
        "cases": [],
    }
    for name, cls, lr, kwargs in CASES:
        optimizer = {"Prodigy": "prodigy", "Adafactor": "adafactor", "Lion": "lion"}[cls]
        after = run_case(classes[cls], lr, kwargs, init, grads)
        out["cases"].append({"name": name, "optimizer": optimizer, "lr": lr, "args": kwargs, "after": after})
    target = os.path.join(os.path.dirname(__file__), "..", "..", "test", "golden", "optimizers.json")
    with open(target, "w", encoding="utf8") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.normpath(target)}: {len(out['cases'])} cases")


if __name__ == "__main__":
    main()
