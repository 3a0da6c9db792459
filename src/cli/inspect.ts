// `sdtune inspect FILE`: names, dtypes, shapes and metadata of a safetensors file.
import { inspectSafetensors } from "../index.js";
import { parseCommandArgs, UsageError, type Command } from "./command.js";

export const command: Command = {
  help: [
    "usage: sdtune inspect FILE.safetensors [--json]",
    "",
    "Lists tensors (name, dtype, shape) and metadata.",
  ].join("\n"),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(argv, { json: { type: "boolean" } });
    if (positionals.length !== 1) throw new UsageError("expected exactly one FILE");
    const header = await inspectSafetensors(positionals[0]!);
    if (values.json) {
      console.log(JSON.stringify(header, null, 2));
      return 0;
    }
    const width = Math.max(4, ...header.tensors.map((t) => t.name.length));
    let parameters = 0;
    for (const t of [...header.tensors].sort((a, b) => a.name.localeCompare(b.name))) {
      parameters += t.shape.reduce((a, b) => a * b, 1);
      console.log(`${t.name.padEnd(width)}  ${t.dtype.padEnd(4)}  [${t.shape.join(", ")}]`);
    }
    console.log(
      `\n${header.tensors.length} tensors, ${parameters.toLocaleString("en-US")} elements, ${header.fileSize} bytes`,
    );
    const keys = Object.keys(header.metadata).sort();
    if (keys.length) {
      console.log("\nmetadata:");
      for (const key of keys) console.log(`  ${key}: ${header.metadata[key]}`);
    }
    return 0;
  },
};
