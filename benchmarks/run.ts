// `npm run bench -- <name> [options]`: runs benchmarks/<name>.ts and prints its JSON.
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export interface Benchmark {
  description: string;
  run(args: string[]): Promise<Record<string, unknown>>;
}

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith(".ts") && f !== "run.ts" && !f.startsWith("_"))
  .map((f) => f.replace(/\.ts$/, ""));

const [name, ...args] = process.argv.slice(2);
if (!name || !available.includes(name)) {
  console.error(`usage: npm run bench -- <name>\navailable: ${available.join(", ")}`);
  process.exit(name ? 2 : 1);
}
const bench = (await import(pathToFileURL(join(here, `${name}.ts`)).href)).benchmark as Benchmark;
const result = await bench.run(args);
console.log(JSON.stringify({ benchmark: name, description: bench.description, ...result }, null, 2));
