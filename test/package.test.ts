// The package as a user installs it: `npm pack` (prebuilt addon inside), `npm install
// --offline <tarball>` into a project outside the repo, then the CLI and every README
// API example run there on the fixture models. Also: what the tarball holds, and an
// install whose source build cannot work fails with one message and leaves nothing.
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { copyFile, mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { fixture, repoRoot, tempDir } from "./helpers/fixtures.js";
import { HF_ENV_KEYS, startHubServer, type HubServer } from "./helpers/hub_server.js";
import { installOffline, packTarball, sh, userEnv } from "./helpers/packed.js";

let dir: { path: string; cleanup(): Promise<void> };
let packed: { tarball: string; files: string[]; size: number };
let project: string;
let install: { status: number | null; stdout: string; stderr: string };

beforeAll(async () => {
  dir = await tempDir("sdtune-package-");
  packed = packTarball(dir.path);
  project = join(dir.path, "project");
  install = installOffline(project, packed.tarball);
}, 600_000);
afterAll(async () => dir?.cleanup());

const sdtune = (...args: string[]) => sh(join(project, "node_modules", ".bin", "sdtune"), args, project);

describe("the packed tarball", () => {
  it("holds the user's files and nothing else", () => {
    const files = packed.files;
    for (const needed of [
      "LICENSE",
      "README.md",
      "package.json",
      "bin/sdtune.js",
      "dist/index.js",
      "dist/index.d.ts",
    ]) {
      expect(files, needed).toContain(needed);
    }
    expect(files.filter((f) => /^prebuilds\/linux-x64\/[^/]+\.node$/.test(f)).length).toBe(1);
    // The fallback source build: CMakeLists.txt, every native source, the install scripts.
    for (const f of ["CMakeLists.txt", "scripts/install.mjs", "scripts/build-native.mjs"]) expect(files).toContain(f);
    const sources = readdirRecursive(join(repoRoot, "native")).map((f) => `native/${f}`);
    expect(files.filter((f) => f.startsWith("native/")).sort()).toEqual(sources.sort());
    const stray = files.filter((f) => /\.map$|^(src|test|benchmarks|build)\/|bootstrap|\.stamp$/.test(f));
    expect(stray).toEqual([]);
    expect(readFileSync(join(repoRoot, "LICENSE"), "utf8")).toMatch(/Apache License\s+Version 2\.0/);
  });
});

describe("npm install <tarball> in an empty project", () => {
  it("installs offline and keeps the prebuilt addon, which loads with this libtorch", () => {
    expect(install.status, `${install.stdout}\n${install.stderr}`).toBe(0);
    expect(install.stdout).toMatch(/sdtune: using the prebuilt addon prebuilds\/linux-x64\/\S+\.node/);
    expect(existsSync(join(project, "node_modules", "sdtune", "build"))).toBe(false);
  });

  it("gives a working `sdtune` CLI: --help as in the checkout, info from the prebuild", () => {
    const help = sdtune("--help");
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toBe(sh(process.execPath, ["bin/sdtune.js", "--help"], repoRoot).stdout);
    const info = sdtune("info");
    expect(info.status, info.stderr).toBe(0);
    expect(info.stdout).toContain(join(project, "node_modules", "sdtune", "prebuilds", "linux-x64"));
  });

  it("generates with the installed CLI exactly what the checkout generates", async () => {
    const args = ["--model", fixture("tiny-sd"), "--prompt", "a red fox", "--steps", "2", "--seed", "5"];
    const installed = sdtune("generate", ...args, "--out", join(dir.path, "gen-installed"));
    expect(installed.status, installed.stderr).toBe(0);
    const checkout = sh(
      process.execPath,
      ["bin/sdtune.js", "generate", ...args, "--out", join(dir.path, "gen-repo")],
      repoRoot,
    );
    expect(checkout.status, checkout.stderr).toBe(0);
    const [png] = (await readdir(join(dir.path, "gen-installed"))).filter((f) => f.endsWith(".png"));
    expect(png).toBeDefined();
    expect(readFileSync(join(dir.path, "gen-installed", png!))).toEqual(readFileSync(join(dir.path, "gen-repo", png!)));
  });

  it("fails with one actionable message, and leaves no package, when the source build cannot work", () => {
    const missing = join(dir.path, "no-libtorch-here");
    const failed = installOffline(join(dir.path, "broken"), packed.tarball, userEnv({ LIBTORCH: missing }));
    expect(failed.status).not.toBe(0);
    const errors = failed.stderr.split("\n").filter((line) => line.startsWith("sdtune:"));
    expect(errors).toEqual([
      `sdtune: cannot build the native addon: LIBTORCH=${missing} has no share/cmake/Torch/TorchConfig.cmake (point it at an unpacked libtorch).`,
    ]);
    expect(existsSync(join(dir.path, "broken", "node_modules", "sdtune"))).toBe(false);
  });
});

function readdirRecursive(root: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(root, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...readdirRecursive(root, rel));
    else out.push(rel);
  }
  return out;
}

// ---- README API examples ------------------------------------------------------------

/** ```ts / ```js blocks of the README that import "sdtune". */
function readmeExamples(): string[] {
  const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
  return [...readme.matchAll(/```(?:ts|js)\n([\s\S]*?)```/g)]
    .map((m) => m[1]!)
    .filter((code) => /from "sdtune"/.test(code));
}

const run = promisify(execFile);

describe("README API examples, run in the installed project", () => {
  let hub: HubServer;
  let pictures: string;
  let substitutions: [RegExp, string][];

  beforeAll(async () => {
    // The README's hub ids, served on loopback from the fixtures; its placeholder paths, mapped to them.
    pictures = join(dir.path, "pictures");
    await mkdir(pictures, { recursive: true });
    const images = (await readdir(fixture("clip_images"))).filter((f) => f.endsWith(".png")).sort();
    for (const f of images) await copyFile(fixture("clip_images", f), join(pictures, f));
    const rows = images.map((f, i) => JSON.stringify({ file_name: f, text: `a picture number ${i}` }));
    await writeFile(join(pictures, "metadata.jsonl"), `${rows.join("\n")}\n`);
    hub = await startHubServer({
      repos: [
        { id: "stabilityai/stable-diffusion-2-base", dir: fixture("tiny-sd") },
        { id: "openai/clip-vit-large-patch14", dir: fixture("tiny-clip") },
        { id: "org/captioned-images", type: "dataset", dir: pictures },
      ],
    });
    // The fixture model is tiny: images of `size` pixels instead of 512, fewer steps; same code paths.
    const vae = JSON.parse(readFileSync(fixture("tiny-sd", "vae", "config.json"), "utf8")) as {
      block_out_channels: number[];
    };
    const size = 32;
    const latent = size / 2 ** (vae.block_out_channels.length - 1);
    const paths: Record<string, string> = {
      "path/to/sd-model": fixture("tiny-sd"),
      "path/to/clip-model": fixture("tiny-clip"),
      "path/to/pictures": pictures,
      "path/to/a.png": join(pictures, images[0]!),
      "path/to/b.png": join(pictures, images[1]!),
      "path/to/style.safetensors": fixture("lora", "kohya", "lora.safetensors"),
      "path/to/subject.safetensors": fixture("lora", "diffusers", "pytorch_lora_weights.safetensors"),
      "path/to/model.safetensors": fixture("tiny-sd", "unet", "diffusion_pytorch_model.safetensors"),
    };
    substitutions = [
      ...Object.entries(paths).map(([from, to]): [RegExp, string] => [new RegExp(`"${from}`, "g"), `"${to}`]),
      [/\b512\b/g, String(size)],
      [/\b64, 64\]/g, `${latent}, ${latent}]`],
      [/\bsteps: 25\b/g, "steps: 2"],
      [/setTimesteps\(25\)/g, "setTimesteps(2)"],
      [/max_train_steps: \d+/g, "max_train_steps: 2"],
      [/epochs: \d+/g, "epochs: 1"],
      [/buckets: true/g, "buckets: { step: 8, minSide: 16, maxSide: 64 }"],
    ];
  }, 60_000);
  afterAll(async () => hub?.close());

  it("include the train() example", () => {
    expect(readmeExamples().some((code) => /import \{[^}]*\btrain\b[^}]*\} from "sdtune"/.test(code))).toBe(true);
  });

  it("run, each as a program of its own", async () => {
    const examples = readmeExamples();
    expect(examples.length).toBeGreaterThan(0);
    const env = userEnv({
      HF_ENDPOINT: hub.endpoint,
      HF_HOME: join(dir.path, "hf"),
      SDTUNE_CACHE_DIR: join(dir.path, "cache"),
    });
    for (const key of HF_ENV_KEYS) if (!["HF_ENDPOINT", "HF_HOME"].includes(key)) delete env[key];
    const tsx = join(repoRoot, "node_modules", "tsx", "dist", "cli.mjs");
    for (const [i, example] of examples.entries()) {
      const code = substitutions.reduce((text, [from, to]) => text.replace(from, to), example);
      const file = join(project, `readme-example-${i + 1}.mts`);
      await writeFile(file, code);
      try {
        await run(process.execPath, [tsx, file], { cwd: project, env, maxBuffer: 64 << 20 });
      } catch (error) {
        const e = error as { stdout?: string; stderr?: string };
        expect.fail(`README example ${i + 1} failed:\n${code}\n--- stderr:\n${e.stderr}\n--- stdout:\n${e.stdout}`);
      }
    }
    expect(existsSync(join(project, "runs", "my-lora", "report.html"))).toBe(true);
  }, 600_000);
});
