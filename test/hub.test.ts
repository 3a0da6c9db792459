// Hub resolution against a real loopback HTTP hub (test/helpers/hub_server.ts)
// serving ../shared/fixtures/tiny-sd and tiny-clip. Every test gets a fresh
// HF_HOME / HF_HUB_CACHE in a temp folder; nothing reaches the real cache or network.
import { createHash } from "node:crypto";
import { existsSync, lstatSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { scanCacheDir } from "@huggingface/hub";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";

import {
  CLIP_FILES,
  HubError,
  resolveDataset,
  resolveFiles,
  resolveModel,
  type HubProgressEvent,
} from "../src/hub/index.js";
import { readJsonFile, resolveWeightFiles } from "../src/models/files.js";
import { fixture, fixtureJson, tempDir } from "./helpers/fixtures.js";
import { isolateHubEnv, startHubServer, type HubServer } from "./helpers/hub_server.js";

const SD = fixture("tiny-sd");
const PICKLE = "\x80\x02}q\x00fake pickle: never download me";

/** Deterministic filler bytes (stand-ins for fp16 weights). */
function filler(bytes: number, seed: number): Buffer {
  const out = Buffer.alloc(bytes);
  let x = seed * 2654435761;
  for (let i = 0; i < bytes; i++) out[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  return out;
}

// Two of the fixture's PNGs (golden/clip_score.json lists them).
const clipImages = fixtureJson<{ images: string[] }>("golden", "clip_score.json").images;
const images = {
  "images/a.png": readFileSync(fixture(clipImages[0]!)),
  "images/b.png": readFileSync(fixture(clipImages[1]!)),
};
const datasetFiles = {
  "README.md": "---\nlicense: mit\n---\n# captions\n",
  "metadata.jsonl": '{"file_name": "images/a.png", "text": "a"}\n{"file_name": "images/b.png", "text": "b"}\n',
  ...images,
  "data/train-00000-of-00001.parquet": filler(5000, 9),
  "captions.py": "import os  # a loading script: never fetched\n",
};

/** The files of a tiny-sd pipeline snapshot, as resolveModel must fetch them. */
const PIPELINE_FILES = [
  "model_index.json",
  "scheduler/scheduler_config.json",
  "text_encoder/config.json",
  "text_encoder/model.safetensors",
  "tokenizer/merges.txt",
  "tokenizer/special_tokens_map.json",
  "tokenizer/tokenizer_config.json",
  "tokenizer/vocab.json",
  "unet/config.json",
  "unet/diffusion_pytorch_model.safetensors",
  "vae/config.json",
  "vae/diffusion_pytorch_model.safetensors",
];

let server: HubServer;
beforeAll(async () => {
  const shardIndex = {
    metadata: { total_size: 300_000 },
    weight_map: {
      "text_model.embeddings.token_embedding.weight": "model.fp16-00001-of-00002.safetensors",
      "text_model.final_layer_norm.weight": "model.fp16-00002-of-00002.safetensors",
    },
  };
  server = await startHubServer({
    treePageSize: 2,
    repos: [
      {
        id: "tiny/sd",
        dir: SD,
        tags: ["v1.0"],
        files: {
          "README.md": "# tiny-sd\n",
          ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
          "unet/diffusion_pytorch_model.bin": PICKLE,
          "text_encoder/pytorch_model.bin": PICKLE,
          "tiny-sd.ckpt": PICKLE,
        },
      },
      { id: "tiny/sd-gated", dir: SD, gated: true },
      {
        id: "tiny/sd-variants",
        dir: SD,
        files: {
          "unet/diffusion_pytorch_model.fp16.safetensors": filler(200_000, 1),
          "text_encoder/model.safetensors.index.fp16.json": JSON.stringify(shardIndex),
          "text_encoder/model.fp16-00001-of-00002.safetensors": filler(150_000, 2),
          "text_encoder/model.fp16-00002-of-00002.safetensors": filler(150_000, 3),
        },
      },
      {
        id: "tiny/sd-pickle",
        dir: SD,
        omit: ["unet/diffusion_pytorch_model.safetensors"],
        files: { "unet/diffusion_pytorch_model.bin": PICKLE },
      },
      {
        id: "tiny/clip",
        dir: fixture("tiny-clip"),
        files: { "pytorch_model.bin": PICKLE, "tf_model.h5": filler(1000, 4) },
      },
      { id: "tiny/captions", type: "dataset", files: datasetFiles },
      { id: "tiny/captions-huge", type: "dataset", files: datasetFiles, omitSiblings: true },
    ],
  });
});
afterAll(async () => server.close());

let restoreEnv: () => void;
let tmp: { path: string; cleanup(): Promise<void> };
let cache: string;
beforeEach(async () => {
  tmp = await tempDir("sdtune-hub-");
  cache = join(tmp.path, "hub");
  restoreEnv = isolateHubEnv({ HF_HOME: join(tmp.path, "home"), HF_HUB_CACHE: cache, HF_ENDPOINT: server.endpoint });
  server.requests.length = 0;
});
afterEach(async () => {
  restoreEnv();
  await tmp.cleanup();
});

const sha256 = (path: string): string => createHash("sha256").update(readFileSync(path)).digest("hex");
const repoDir = (id: string, type = "models"): string => join(cache, `${type}--${id.replace("/", "--")}`);
/** Repo paths requested through resolve/ (the CDN hop is counted with its hub request). */
const resolved = (): string[] =>
  server.requests
    .filter((r) => r.server === "hub" && r.url.includes("/resolve/"))
    .map((r) => r.url.split("/resolve/")[1]!.split("/").slice(1).join("/"));

async function rejection(promise: Promise<unknown>): Promise<HubError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected a rejection").toBeInstanceOf(HubError);
  return error as HubError;
}

describe("resolveModel: download into the HF cache", () => {
  it("lays the snapshot out like huggingface_hub, fetching only what the pipeline needs", async () => {
    const events: HubProgressEvent[] = [];
    const dir = await resolveModel("tiny/sd", { onProgress: (e) => events.push({ ...e }) });
    const commit = server.commit("tiny/sd");
    const storage = repoDir("tiny/sd");
    expect(dir).toBe(join(storage, "snapshots", commit));
    expect(readFileSync(join(storage, "refs", "main"), "utf8")).toBe(commit);

    for (const path of PIPELINE_FILES) {
      const served = server.file("tiny/sd", path);
      const link = join(dir, path);
      expect(lstatSync(link).isSymbolicLink(), path).toBe(true);
      const etag = served.lfs ? served.sha256 : served.gitOid;
      const depth = path.split("/").length;
      expect(readlinkSync(link), path).toBe(`${"../".repeat(depth + 1)}blobs/${etag}`);
      expect(readFileSync(link).equals(readFileSync(join(SD, path))), `${path} content`).toBe(true);
    }
    expect(existsSync(join(storage, "blobs"))).toBe(true);
    const blobs = await import("node:fs").then((fs) => fs.readdirSync(join(storage, "blobs")));
    expect(blobs.some((b) => b.endsWith(".incomplete"))).toBe(false);

    // Exactly the needed files were requested: one API call, one resolve per file, one CDN hop per LFS file.
    expect(resolved().sort()).toEqual([...PIPELINE_FILES].sort());
    expect(server.requests.filter((r) => r.url.startsWith("/api/")).length).toBe(1);
    const lfs = PIPELINE_FILES.filter((p) => server.file("tiny/sd", p).lfs);
    expect(server.requests.filter((r) => r.server === "cdn").length).toBe(lfs.length);
    for (const skipped of [
      "README.md",
      "unet/diffusion_pytorch_model.bin",
      "tiny-sd.ckpt",
      "text_encoder/pytorch_model.bin",
    ]) {
      expect(existsSync(join(dir, skipped)), skipped).toBe(false);
    }

    // The folder loads as a diffusers folder.
    expect((readJsonFile(join(dir, "model_index.json")) as { _class_name: string })._class_name).toBe(
      "StableDiffusionPipeline",
    );
    expect(resolveWeightFiles(join(dir, "unet"))).toEqual([join(dir, "unet", "diffusion_pytorch_model.safetensors")]);
    expect(resolveWeightFiles(join(dir, "text_encoder"))).toEqual([join(dir, "text_encoder", "model.safetensors")]);

    // huggingface.js' own cache scanner reads our layout (it looks at top-level files only).
    const scan = await scanCacheDir(cache);
    expect(scan.warnings.map((w) => w.message)).toEqual([]);
    const repo = scan.repos.find((r) => r.id.name === "tiny/sd" && r.id.type === "model")!;
    expect(repo.revisions.map((r) => [r.commitOid, r.refs])).toEqual([[commit, ["main"]]]);
    for (const f of repo.revisions[0]!.files) expect(f.blob.path.startsWith(join(storage, "blobs"))).toBe(true);

    // Progress: per file and overall, ending at the total.
    const total = PIPELINE_FILES.reduce((sum, p) => sum + server.file("tiny/sd", p).bytes.length, 0);
    const last = events.at(-1)!;
    expect(last.total).toBe(total);
    expect(last.step).toBe(total);
    expect(last.filesDone).toBe(last.filesTotal);
    for (const e of events) expect(e.fileBytes).toBeLessThanOrEqual(e.fileTotal);
    const unet = events.filter((e) => e.file === "unet/diffusion_pytorch_model.safetensors");
    expect(unet.at(-1)!.fileBytes).toBe(
      server.file("tiny/sd", "unet/diffusion_pytorch_model.safetensors").bytes.length,
    );
  });

  it("makes no request at all on a cache hit (branch, tag and commit revisions)", async () => {
    const dir = await resolveModel("tiny/sd");
    const tagged = await resolveModel("tiny/sd", { revision: "v1.0" });
    expect(tagged).toBe(dir);
    expect(readFileSync(join(repoDir("tiny/sd"), "refs", "v1.0"), "utf8")).toBe(server.commit("tiny/sd"));
    server.requests.length = 0;
    expect(await resolveModel("tiny/sd")).toBe(dir);
    expect(await resolveModel("tiny/sd", { revision: "v1.0" })).toBe(dir);
    expect(await resolveModel("tiny/sd", { revision: server.commit("tiny/sd") })).toBe(dir);
    expect(server.requests).toEqual([]);
    // refresh asks the hub (one API call) and downloads nothing.
    await resolveModel("tiny/sd", { refresh: true });
    expect(server.requests.map((r) => r.url.split("?")[0])).toEqual([`/api/models/tiny/sd/revision/main`]);
  });

  it("re-fetches only what a partial snapshot lacks", async () => {
    const dir = await resolveModel("tiny/sd");
    const blob = (path: string): string => join(repoDir("tiny/sd"), "blobs", server.file("tiny/sd", path).gitOid);
    await rm(join(dir, "unet", "config.json")); // link gone, blob kept: relinked without download
    await rm(join(dir, "vae", "config.json"));
    await rm(blob("vae/config.json"));
    server.requests.length = 0;
    await resolveModel("tiny/sd");
    expect(resolved()).toEqual(["vae/config.json"]);
    expect(readFileSync(join(dir, "unet", "config.json")).equals(readFileSync(join(SD, "unet", "config.json")))).toBe(
      true,
    );
  });

  it("returns a local folder as is and rejects malformed ids clearly", async () => {
    expect(await resolveModel(SD)).toBe(SD);
    const missing = await rejection(resolveModel("./no/such/folder"));
    expect(missing.message).toMatch(/local folder .*no\/such\/folder does not exist/);
    for (const bad of ["org/-name", "org--x/name", "org/na me", "org/name.git", "a/b..c"]) {
      const error = await rejection(resolveModel(bad));
      expect(error.code, bad).toBe("invalid_id");
      expect(error.message, bad).toContain(`"${bad}" is not a valid Hugging Face model id`);
    }
    expect(server.requests).toEqual([]);
  });
});

describe("offline mode", () => {
  it("resolves from the cache with HF_HUB_OFFLINE=1 and names what is missing otherwise", async () => {
    const dir = await resolveModel("tiny/sd");
    server.requests.length = 0;
    process.env.HF_HUB_OFFLINE = "1";
    expect(await resolveModel("tiny/sd")).toBe(dir);

    const notCached = await rejection(resolveModel("tiny/sd-variants"));
    expect(notCached.code).toBe("not_cached");
    expect(notCached.message).toContain("repo tiny/sd-variants@main is not in the cache");
    expect(notCached.message).toContain("no refs/main");
    expect(notCached.message).toContain("offline mode is on");

    await rm(join(dir, "unet", "diffusion_pytorch_model.safetensors"));
    await rm(
      join(repoDir("tiny/sd"), "blobs", server.file("tiny/sd", "unet/diffusion_pytorch_model.safetensors").sha256),
    );
    const partial = await rejection(resolveModel("tiny/sd"));
    expect(partial.message).toContain("only partly in the cache");
    expect(partial.message).toContain("unet/diffusion_pytorch_model.safetensors");
    expect(server.requests).toEqual([]);

    // offline: false wins over the environment.
    expect(await resolveModel("tiny/sd", { offline: false })).toBe(dir);
    expect(resolved()).toEqual(["unet/diffusion_pytorch_model.safetensors"]);
  });
});

describe("interrupted and cancelled downloads", () => {
  const UNET = "unet/diffusion_pytorch_model.safetensors";

  it("resumes a cut download with a Range request and ends byte-identical", async () => {
    const served = server.file("tiny/sd", UNET);
    server.cutNext(UNET, 1_000_000);
    const error = await rejection(resolveModel("tiny/sd", { retries: 0 }));
    expect(error.code).toBe("network");
    expect(error.message).toContain(`${server.cdnOrigin}/lfs/${served.sha256}`);
    const incomplete = join(repoDir("tiny/sd"), "blobs", `${served.sha256}.incomplete`);
    // Up to the cut: fetch may drop bytes it had buffered when the connection ended early.
    const kept = statSync(incomplete).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(1_000_000);
    expect(existsSync(join(repoDir("tiny/sd"), "refs", "main"))).toBe(false);

    server.requests.length = 0;
    const dir = await resolveModel("tiny/sd");
    const cdn = server.requests.filter((r) => r.server === "cdn" && r.url.includes(served.sha256));
    expect(cdn.map((r) => r.range)).toEqual([`bytes=${kept}-`]);
    expect(sha256(join(dir, UNET))).toBe(served.sha256);
    expect(readFileSync(join(dir, UNET)).equals(readFileSync(join(SD, UNET)))).toBe(true);
    expect(existsSync(incomplete)).toBe(false);
  });

  it("retries a dropped connection within the same call, resuming where it stopped", async () => {
    server.cutNext(UNET, 700_000);
    const dir = await resolveModel("tiny/sd");
    const ranges = server.requests
      .filter((r) => r.server === "cdn" && r.url.includes(server.file("tiny/sd", UNET).sha256))
      .map((r) => r.range);
    expect(ranges).toHaveLength(2);
    expect(ranges[0]).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(ranges[1] ?? "")?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(700_000);
    expect(readFileSync(join(dir, UNET)).equals(readFileSync(join(SD, UNET)))).toBe(true);
  });

  it("cancels through an AbortSignal, leaving a resumable .incomplete", async () => {
    const served = server.file("tiny/sd", UNET);
    server.stallNext(UNET, 500_000);
    const controller = new AbortController();
    const error = await rejection(
      resolveModel("tiny/sd", {
        signal: controller.signal,
        onProgress: (e) => {
          if (e.file === UNET && e.fileBytes === 500_000) controller.abort();
        },
      }),
    );
    expect(error.name).toBe("AbortError");
    expect(error.code).toBe("aborted");
    const incomplete = join(repoDir("tiny/sd"), "blobs", `${served.sha256}.incomplete`);
    expect(statSync(incomplete).size).toBe(500_000);

    server.requests.length = 0;
    const dir = await resolveModel("tiny/sd");
    expect(
      server.requests.filter((r) => r.server === "cdn" && r.url.includes(served.sha256)).map((r) => r.range),
    ).toEqual(["bytes=500000-"]);
    expect(sha256(join(dir, UNET))).toBe(served.sha256);
  });

  it("rejects a corrupted download (sha256 for LFS files, git blob id for others) and removes it", async () => {
    for (const path of [UNET, "unet/config.json"]) {
      const cacheDir = join(tmp.path, path.replace(/\W/g, "_")); // fresh: the file is surely fetched
      const served = server.file("tiny/sd", path);
      server.corruptNext(path);
      const error = await rejection(resolveModel("tiny/sd", { cacheDir }));
      expect(error.code).toBe("integrity");
      expect(error.message).toContain(`downloaded ${path} does not match the hub's listing`);
      expect(error.message).toContain(served.lfs ? `sha256` : "git blob id");
      const blob = join(cacheDir, "models--tiny--sd", "blobs", served.lfs ? served.sha256 : served.gitOid);
      expect(existsSync(`${blob}.incomplete`)).toBe(false);
      expect(existsSync(blob)).toBe(false);
      const dir = await resolveModel("tiny/sd", { cacheDir });
      expect(readFileSync(join(dir, path)).equals(served.bytes)).toBe(true);
    }
  });

  it("downloads each blob once when two resolves race", async () => {
    const [a, b] = await Promise.all([resolveModel("tiny/sd"), resolveModel("tiny/sd")]);
    expect(a).toBe(b);
    for (const path of PIPELINE_FILES) expect(resolved().filter((p) => p === path).length, path).toBe(1);
    for (const path of PIPELINE_FILES)
      expect(readFileSync(join(a, path)).equals(readFileSync(join(SD, path))), path).toBe(true);
  });
});

describe("access errors", () => {
  it("explains a gated repo without a token and works with one (never sending it to the CDN)", async () => {
    const error = await rejection(resolveModel("tiny/sd-gated"));
    expect(error.code).toBe("gated");
    expect(error.status).toBe(401);
    expect(error.where).toBe(
      `${server.endpoint}/tiny/sd-gated/resolve/${server.commit("tiny/sd-gated")}/model_index.json`,
    );
    expect(error.message).toContain(
      `repo tiny/sd-gated is gated or private: accept its license at ${server.endpoint}/tiny/sd-gated and set HF_TOKEN (or pass token)`,
    );
    const wrong = await rejection(resolveModel("tiny/sd-gated", { token: "hf_wrong" }));
    expect(wrong.status).toBe(403);
    expect(wrong.message).toContain("check that your token");
    expect(wrong.message).not.toContain("hf_wrong");

    server.requests.length = 0;
    process.env.HF_TOKEN = server.token;
    const dir = await resolveModel("tiny/sd-gated");
    expect(existsSync(join(dir, "unet", "diffusion_pytorch_model.safetensors"))).toBe(true);
    expect(
      server.requests.filter((r) => r.server === "hub").every((r) => r.authorization === `Bearer ${server.token}`),
    ).toBe(true);
    expect(server.requests.filter((r) => r.server === "cdn").every((r) => r.authorization === undefined)).toBe(true);
  });

  it("reads the token from $HF_HOME/token", async () => {
    await mkdir(process.env.HF_HOME!, { recursive: true });
    await writeFile(join(process.env.HF_HOME!, "token"), `${server.token}\n`);
    await expect(resolveModel("tiny/sd-gated")).resolves.toContain("models--tiny--sd-gated");
  });

  it("says whether the repo or the revision was not found, and names unreachable URLs", async () => {
    process.env.HF_TOKEN = server.token;
    const repo = await rejection(resolveModel("tiny/nope"));
    expect(repo.code).toBe("repo_not_found");
    expect(repo.message).toContain("repo tiny/nope not found");
    const revision = await rejection(resolveModel("tiny/sd", { revision: "no-such-branch" }));
    expect(revision.code).toBe("revision_not_found");
    expect(revision.message).toContain('revision "no-such-branch" not found in repo tiny/sd');

    const unreachable = await rejection(resolveModel("tiny/sd", { endpoint: "http://127.0.0.1:9" }));
    expect(unreachable.code).toBe("network");
    expect(unreachable.message).toContain("http://127.0.0.1:9/api/models/tiny/sd/revision/main");
  });
});

describe("disk and callback errors", () => {
  it("names the path when the cache cannot be written", async () => {
    const file = join(tmp.path, "not-a-folder");
    await writeFile(file, "x");
    const error = await rejection(resolveModel("tiny/sd", { cacheDir: join(file, "hub") }));
    expect(error.code).toBe("disk");
    expect(error.message).toContain(join(file, "hub"));
    expect(error.message).toMatch(/ENOTDIR|EEXIST/);
  });

  it("stops and rethrows when the progress callback throws", async () => {
    const boom = new Error("callback failed");
    const error = await resolveModel("tiny/sd", {
      onProgress: () => {
        throw boom;
      },
    }).catch((e: unknown) => e);
    expect(error).toBe(boom);
    expect(existsSync(join(repoDir("tiny/sd"), "refs", "main"))).toBe(false);
  });
});

describe("weights: variants and pickles", () => {
  it("fetches the fp16 variant where a component has one, plain weights elsewhere (as diffusers)", async () => {
    const plain = await resolveModel("tiny/sd-variants");
    expect(resolved().filter((p) => p.includes("fp16"))).toEqual([]);
    server.requests.length = 0;

    // The plain snapshot is not enough for fp16: the hub is asked, and only the fp16 files are fetched.
    const dir = await resolveModel("tiny/sd-variants", { variant: "fp16" });
    expect(dir).toBe(plain);
    expect(resolved().sort()).toEqual([
      "text_encoder/model.fp16-00001-of-00002.safetensors",
      "text_encoder/model.fp16-00002-of-00002.safetensors",
      "text_encoder/model.safetensors.index.fp16.json",
      "unet/diffusion_pytorch_model.fp16.safetensors",
    ]);
    const shard = server.file("tiny/sd-variants", "text_encoder/model.fp16-00002-of-00002.safetensors");
    expect(sha256(join(dir, "text_encoder", "model.fp16-00002-of-00002.safetensors"))).toBe(shard.sha256);
    // The vae has no fp16 weights: recorded in .no_exist, so the cache alone answers next time.
    const commit = server.commit("tiny/sd-variants");
    const noExist = join(repoDir("tiny/sd-variants"), ".no_exist", commit, "vae");
    expect(existsSync(join(noExist, "diffusion_pytorch_model.fp16.safetensors"))).toBe(true);
    server.requests.length = 0;
    expect(await resolveModel("tiny/sd-variants", { variant: "fp16", offline: true })).toBe(dir);
    expect(server.requests).toEqual([]);
  });

  it("fetches only the variant's files on a fresh cache", async () => {
    await resolveModel("tiny/sd-variants", { variant: "fp16" });
    const fetched = resolved();
    expect(fetched).toContain("unet/diffusion_pytorch_model.fp16.safetensors");
    expect(fetched).toContain("vae/diffusion_pytorch_model.safetensors"); // no fp16 vae: plain weights
    expect(fetched).not.toContain("unet/diffusion_pytorch_model.safetensors");
    expect(fetched).not.toContain("text_encoder/model.safetensors");
  });

  it("refuses a component that has only pickled weights, without downloading the pickle", async () => {
    const error = await rejection(resolveModel("tiny/sd-pickle"));
    expect(error.code).toBe("pickle_only");
    expect(error.message).toContain("unet/ has only pickled weights (unet/diffusion_pytorch_model.bin)");
    expect(error.message).toContain("runs arbitrary code");
    expect(error.message).toContain("save_pretrained(out, safe_serialization=True)");
    expect(resolved()).toEqual(["model_index.json"]);
  });

  it("fetches a subset of components when asked", async () => {
    const dir = await resolveModel("tiny/sd", { components: ["tokenizer", "scheduler"] });
    expect(resolved().sort()).toEqual(
      PIPELINE_FILES.filter((p) => /^(model_index|tokenizer\/|scheduler\/)/.test(p)).sort(),
    );
    expect(existsSync(join(dir, "unet"))).toBe(false);
    const unknown = await rejection(resolveModel("tiny/sd", { components: ["unet", "refiner"] }));
    expect(unknown.message).toContain('no component "refiner" in model_index.json');
  });
});

describe("resolveFiles and resolveDataset", () => {
  it("fetches a CLIP checkpoint's files, records absent optional ones, then hits the cache", async () => {
    const dir = await resolveFiles("tiny/clip", CLIP_FILES.patterns, { optional: [...CLIP_FILES.optional] });
    for (const name of [
      "config.json",
      "preprocessor_config.json",
      "vocab.json",
      "merges.txt",
      "tokenizer_config.json",
      "special_tokens_map.json",
      "model.safetensors",
    ]) {
      expect(readFileSync(join(dir, name)).equals(readFileSync(fixture("tiny-clip", name))), name).toBe(true);
    }
    expect(resolved()).not.toContain("pytorch_model.bin");
    expect(resolved()).not.toContain("tf_model.h5");
    // tiny-clip has no tokenizer.json: huggingface_hub's .no_exist marker records it.
    expect(existsSync(join(repoDir("tiny/clip"), ".no_exist", server.commit("tiny/clip"), "tokenizer.json"))).toBe(
      true,
    );
    server.requests.length = 0;
    expect(await resolveFiles("tiny/clip", CLIP_FILES.patterns, { optional: [...CLIP_FILES.optional] })).toBe(dir);
    expect(server.requests).toEqual([]);

    const pickled = await rejection(resolveFiles("tiny/clip", ["pytorch_model.safetensors"]));
    expect(pickled.code).toBe("pickle_only");
  });

  it("fetches a dataset's data files (not its scripts) under datasets--org--name", async () => {
    const dir = await resolveDataset("tiny/captions");
    expect(dir).toBe(join(repoDir("tiny/captions", "datasets"), "snapshots", server.commit("tiny/captions")));
    expect(resolved().sort()).toEqual([
      "README.md",
      "data/train-00000-of-00001.parquet",
      "images/a.png",
      "images/b.png",
      "metadata.jsonl",
    ]);
    expect(server.requests.every((r) => r.server === "cdn" || r.url.includes("datasets"))).toBe(true);
    expect(readFileSync(join(dir, "images", "a.png")).equals(images["images/a.png"])).toBe(true);

    // Globs need the file list: one API call, no downloads. Offline, the cache is used as is.
    server.requests.length = 0;
    expect(await resolveDataset("tiny/captions")).toBe(dir);
    expect(server.requests.length).toBe(1);
    server.requests.length = 0;
    expect(await resolveDataset("tiny/captions", { offline: true })).toBe(dir);
    expect(server.requests).toEqual([]);
  });

  it("lists a huge repo through the paginated tree API when the hub omits siblings", async () => {
    const dir = await resolveDataset("tiny/captions-huge", { allowPatterns: ["*.jsonl", "images/*"] });
    const tree = server.requests.filter((r) => r.url.includes("/tree/"));
    expect(tree.length).toBe(3); // 6 files, 2 per page
    expect(tree.slice(1).every((r) => r.url.includes("cursor="))).toBe(true);
    expect(resolved().sort()).toEqual(["images/a.png", "images/b.png", "metadata.jsonl"]);
    expect(readFileSync(join(dir, "metadata.jsonl"), "utf8")).toBe(datasetFiles["metadata.jsonl"]);
  });
});
