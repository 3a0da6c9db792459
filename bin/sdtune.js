#!/usr/bin/env node
// The CLI entry point: the compiled TypeScript lives in dist/.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const entry = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "cli", "main.js");
if (!existsSync(entry)) {
  console.error("sdtune: not built yet; run `npm run bootstrap` in the sdtune folder.");
  process.exit(1);
}
// `sdtune inspect big.safetensors | head`: a closed pipe ends the output quietly.
process.stdout.on("error", (error) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});
const { main } = await import(pathToFileURL(entry).href);
process.exitCode = await main(process.argv.slice(2));
