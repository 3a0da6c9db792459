// sdtune's own CPU kernels (native/nn/attention_cpu.cc, frozen_linear.cc, frozen_conv.cc, parallel_mm.cc)
// against libtorch's plain ops on seeded random inputs: output and every gradient, with and
// without gradient mode. The shapes cover the splits each kernel makes: query blocks that do
// not divide the length, few heads (fewer tasks than blocks per thread), cross-attention's 77
// keys, batch > 1; linear products split by rows (many tokens) and by output features (a
// weight-bound layer), with and without bias; convolutions at the sizes they take (3x3, 1x1,
// stride 2) and one they leave to libtorch.
import { describe, expect, it } from "vitest";

import { native } from "../src/native/index.js";

// float32 sums in another order: differences of a few ulps of the magnitudes involved.
const RELATIVE = 2e-6;

function within(diff: number, magnitude: number): boolean {
  return diff <= RELATIVE * Math.max(1, magnitude) * 8;
}

describe("blocked CPU attention", () => {
  const shapes: [string, number[]][] = [
    ["self-attention, one head block per thread", [1, 2, 1000, 1000, 40]],
    ["cross-attention with 77 keys, batch 2", [2, 5, 1024, 77, 64]],
    ["rows that do not divide into blocks", [1, 3, 777, 513, 24]],
    ["many heads", [1, 20, 256, 256, 64]],
  ];
  it.each(shapes)("matches softmax(q k^T / sqrt(d)) v and its gradients: %s", async (_what, shape) => {
    const r = await native().ops.kernelParity({ kernel: "attention", shape, seed: 11 });
    expect(r.used).toBe(true);
    expect(r.inputsChanged).toBe(0);
    expect(r.magnitude).toBeGreaterThan(0);
    expect(within(r.output, r.magnitude)).toBe(true);
    expect(within(r.inferenceOutput, r.magnitude)).toBe(true);
    expect(r.grads).toHaveLength(3);
    // The gradients' scale is the output gradient's (unit normal) times softmax weights: O(1).
    for (const g of r.grads) expect(within(g, 1)).toBe(true);
  });

  it("leaves tiny products to the plain path", async () => {
    const r = await native().ops.kernelParity({ kernel: "attention", shape: [1, 2, 16, 16, 8], seed: 1 });
    expect(r.used).toBe(false);
  });
});

describe("frozen linear over the OpenMP team", () => {
  const shapes: [string, number[], boolean][] = [
    ["many tokens (split by rows)", [4096, 320, 640], true],
    ["few tokens, wide layer (split by output features)", [64, 1280, 5120], true],
    ["no bias", [1000, 96, 200], false],
    ["too small to split", [5, 7, 9], true],
    ["one row (a timestep embedding)", [1, 32, 64], true],
  ];
  it.each(shapes)("matches F.linear and dx: %s", async (_what, shape, bias) => {
    const r = await native().ops.kernelParity({ kernel: "linear", shape, seed: 5, bias });
    expect(r.inputsChanged).toBe(0);
    // The split needs a team: with one thread the layer keeps F.linear.
    expect(r.used).toBe(native().info().threads > 1);
    // Sums over `in` products of unit normals: magnitude about sqrt(in).
    const scale = Math.sqrt(shape[1]!) * 4;
    expect(within(r.output, scale)).toBe(true);
    expect(within(r.inferenceOutput, scale)).toBe(true);
    expect(r.grads).toHaveLength(1);
    expect(within(r.grads[0]!, Math.sqrt(shape[2]!) * 4)).toBe(true);
  });

  it("names the field of a bad request", () => {
    expect(() => native().ops.kernelParity({ kernel: "linear", shape: [1, 2], seed: 1 })).toThrow(
      /options\.shape: expected 3 sizes/,
    );
  });
});

describe("frozen convolution as one product over the OpenMP team", () => {
  // [batch, in, out, side, kernel, stride]: SD's deepest level at 32x32 latents, its downsampler
  // into that level, a 1x1 shortcut, and a small input libtorch would run on one thread.
  const taken: [string, number[]][] = [
    ["3x3 at 4x4", [1, 64, 48, 4, 3, 1]],
    ["3x3 stride 2 into 4x4", [1, 32, 40, 8, 3, 2]],
    ["1x1 shortcut", [1, 96, 48, 4, 1, 1]],
    ["small input, odd side", [1, 24, 16, 7, 3, 1]],
    ["one output position", [1, 16, 24, 1, 1, 1]],
  ];
  it.each(taken)("matches F.conv2d and dx: %s", async (_what, shape) => {
    const r = await native().ops.kernelParity({ kernel: "conv", shape, seed: 7 });
    expect(r.inputsChanged).toBe(0);
    expect(r.used).toBe(native().info().threads > 1);
    // Sums over in * k * k products of unit normals.
    const scale = Math.sqrt(shape[1]! * shape[4]! * shape[4]!) * 4;
    expect(within(r.output, scale)).toBe(true);
    expect(within(r.inferenceOutput, scale)).toBe(true);
    expect(r.grads).toHaveLength(1);
    expect(within(r.grads[0]!, Math.sqrt(shape[2]! * shape[4]! * shape[4]!) * 4)).toBe(true);
  });

  it("leaves larger inputs to oneDNN", async () => {
    const r = await native().ops.kernelParity({ kernel: "conv", shape: [2, 64, 64, 16, 3, 1], seed: 7 });
    expect(r.used).toBe(false);
  });
});
