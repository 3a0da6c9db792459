// The smallest valid training config, and the problems a config is refused with.
import { expect } from "vitest";

import { ConfigError } from "../../src/config/errors.js";
import { resolveTrainConfig } from "../../src/config/train.js";

export const minimal = { model: "m", output_dir: "out", dataset: { path: "data" }, max_train_steps: 10 };

/** The problems resolveTrainConfig lists for `raw`; fails the test when it does not throw a ConfigError. */
export function problems(raw: unknown): string[] {
  try {
    resolveTrainConfig(raw, "run.yaml");
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}
