// A loopback Hugging Face hub for tests: serves folders (e.g. ../shared/fixtures/tiny-sd)
// as repos the way huggingface.co does, so hub resolution runs against real HTTP.
//
//   GET /api/{models|datasets}/{id}/revision/{rev}[?blobs=true]   commit sha + siblings
//   GET /api/{models|datasets}/{id}/tree/{rev}?recursive=true     paginated (Link: rel="next")
//   GET|HEAD /[datasets/]{id}/resolve/{rev}/{path}
//       regular files: 200 (or 206 for Range) with ETag "<git blob sha1>", X-Repo-Commit
//       LFS files: 302 to a second "CDN" server (another origin) with X-Linked-Etag
//       "<sha256>", X-Linked-Size, X-Repo-Commit; the CDN honours Range
//   errors carry X-Error-Code: RepoNotFound / RevisionNotFound / EntryNotFound / GatedRepo
//   (a gated repo's API answers are public; resolve/ wants the token)
//
// Switches: a gated repo that wants `Authorization: Bearer <token>`, cutNext()
// (drop the connection after N bytes), stallNext() (send N bytes, then hang),
// and a log of every request on both servers.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";

export interface FakeRepo {
  id: string;
  type?: "model" | "dataset";
  /** A folder whose files (recursively) make up the repo. */
  dir?: string;
  /** Files added (or replaced) on top of `dir`. */
  files?: Record<string, string | Uint8Array>;
  /** Paths of `dir` left out. */
  omit?: string[];
  /** Needs the server's token. */
  gated?: boolean;
  /** Tags / branches besides "main", all pointing to the repo's one commit. */
  tags?: string[];
  /** Answer the revision API without siblings (as the hub does for huge repos). */
  omitSiblings?: boolean;
}

export interface HubServerOptions {
  repos: FakeRepo[];
  /** The token gated repos accept. Default "hf_test_token". */
  token?: string;
  /** Entries per page of the tree API. Default 1000. */
  treePageSize?: number;
  /**
   * Host name in the CDN redirects. Default "127.0.0.1" (another port: another
   * origin for fetch). Python's huggingface_hub >= 1.0 follows redirects to the
   * same host name as its own, so cross-checks with it use "localhost".
   */
  cdnHost?: string;
}

export interface HubRequest {
  server: "hub" | "cdn";
  method: string;
  /** Path and query, decoded. */
  url: string;
  range?: string;
  authorization?: string;
  status: number;
}

export interface ServedFile {
  path: string;
  bytes: Buffer;
  gitOid: string;
  sha256: string;
  lfs: boolean;
}

export interface HubServer {
  /** Use as HF_ENDPOINT. */
  endpoint: string;
  cdnOrigin: string;
  token: string;
  requests: HubRequest[];
  commit(repoId: string): string;
  file(repoId: string, path: string): ServedFile;
  /** The next GET of this file sends `afterBytes` bytes of its body, then drops the connection. */
  cutNext(path: string, afterBytes: number): void;
  /** The next GET of this file sends `afterBytes` bytes, then hangs until the client gives up. */
  stallNext(path: string, afterBytes: number): void;
  /** The next GET of this file sends its bytes with one of them changed. */
  corruptNext(path: string): void;
  close(): Promise<void>;
}

const LFS = /\.(safetensors|bin|ckpt|pt|pth|parquet|arrow|png|jpe?g|webp|h5|msgpack|onnx)$/;

interface Repo {
  id: string;
  type: "model" | "dataset";
  commit: string;
  gated: boolean;
  revisions: Set<string>;
  omitSiblings: boolean;
  files: Map<string, ServedFile>;
}

function listDir(dir: string, prefix = ""): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = join(dir, name);
    return statSync(full).isDirectory() ? listDir(full, `${prefix}${name}/`) : [`${prefix}${name}`];
  });
}

function serve(path: string, bytes: Buffer): ServedFile {
  const gitOid = createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  return { path, bytes, gitOid, sha256, lfs: LFS.test(path) || bytes.length > 10 * 1024 * 1024 };
}

function buildRepo(spec: FakeRepo): Repo {
  const files = new Map<string, ServedFile>();
  if (spec.dir) {
    for (const path of listDir(spec.dir)) {
      if (!spec.omit?.includes(path)) files.set(path, serve(path, readFileSync(join(spec.dir, path))));
    }
  }
  for (const [path, contents] of Object.entries(spec.files ?? {})) files.set(path, serve(path, Buffer.from(contents)));
  const commit = createHash("sha1")
    .update(spec.id)
    .update(
      [...files.values()]
        .map((f) => `${f.path}:${f.gitOid}`)
        .sort()
        .join("\n"),
    )
    .digest("hex");
  return {
    id: spec.id,
    type: spec.type ?? "model",
    commit,
    gated: spec.gated ?? false,
    revisions: new Set(["main", ...(spec.tags ?? [])]),
    omitSiblings: spec.omitSiblings ?? false,
    files,
  };
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

export async function startHubServer(options: HubServerOptions): Promise<HubServer> {
  const token = options.token ?? "hf_test_token";
  const pageSize = options.treePageSize ?? 1000;
  const repos = new Map(options.repos.map((spec) => [`${spec.type ?? "model"}:${spec.id}`, buildRepo(spec)]));
  const byHash = new Map<string, ServedFile>();
  for (const repo of repos.values()) for (const f of repo.files.values()) byHash.set(f.sha256, f);
  const requests: HubRequest[] = [];
  const cuts = new Map<string, { afterBytes: number; stall: boolean }>();
  const corrupt = new Set<string>();

  const hub = createServer((req, res) => handleHub(req, res));
  const cdn = createServer((req, res) => handleCdn(req, res));
  const endpoint = await listen(hub);
  const cdnOrigin = (await listen(cdn)).replace("127.0.0.1", options.cdnHost ?? "127.0.0.1");

  function log(server: "hub" | "cdn", req: IncomingMessage, res: ServerResponse): void {
    const entry: HubRequest = {
      server,
      method: req.method ?? "GET",
      url: decodeURIComponent(req.url ?? ""),
      status: 0,
    };
    if (req.headers.range) entry.range = req.headers.range;
    if (req.headers.authorization) entry.authorization = req.headers.authorization;
    requests.push(entry);
    res.on("finish", () => (entry.status = res.statusCode));
    res.on("close", () => (entry.status ||= res.statusCode));
  }

  function fail(res: ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, { "content-type": "application/json", "x-error-code": code, "x-error-message": message });
    res.end(JSON.stringify({ error: message }));
  }

  /**
   * The repo of a request, or an error answer. As on the hub, a gated repo's
   * metadata and file list are public; its files need the token.
   */
  function findRepo(
    req: IncomingMessage,
    res: ServerResponse,
    type: string,
    id: string,
    files = false,
  ): Repo | undefined {
    const repo = repos.get(`${type}:${id}`);
    const auth = req.headers.authorization;
    if (!repo) {
      fail(res, auth ? 404 : 401, "RepoNotFound", "Repository not found");
      return undefined;
    }
    if (repo.gated && files && auth !== `Bearer ${token}`) {
      if (auth)
        fail(res, 403, "GatedRepo", `Access to model ${id} is restricted and you are not in the authorized list.`);
      else fail(res, 401, "GatedRepo", `Access to model ${id} is restricted. You must be authenticated to access it.`);
      return undefined;
    }
    return repo;
  }

  function checkRevision(res: ServerResponse, repo: Repo, revision: string): boolean {
    if (repo.revisions.has(revision) || revision === repo.commit) return true;
    fail(res, 404, "RevisionNotFound", `Invalid rev id: ${revision}`);
    return false;
  }

  function handleHub(req: IncomingMessage, res: ServerResponse): void {
    log("hub", req, res);
    const url = new URL(req.url ?? "/", endpoint);
    const path = url.pathname; // matched raw: a revision may be "refs%2Fpr%2F1"
    const d = decodeURIComponent;
    let m = /^\/api\/(models|datasets)\/(.+)\/revision\/([^/]+)$/.exec(path);
    if (m)
      return revisionApi(req, res, m[1]!.slice(0, -1), d(m[2]!), d(m[3]!), url.searchParams.get("blobs") === "true");
    m = /^\/api\/(models|datasets)\/(.+?\/.+?|[^/]+)\/tree\/([^/]+)(\/.*)?$/.exec(path);
    if (m)
      return treeApi(req, res, m[1]!.slice(0, -1), d(m[2]!), d(m[3]!), Number(url.searchParams.get("cursor") ?? 0));
    m = /^\/(datasets\/)?(.+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (m) return resolveFile(req, res, m[1] ? "dataset" : "model", d(m[2]!), d(m[3]!), d(m[4]!));
    fail(res, 404, "NotFound", `no route ${path}`);
  }

  function revisionApi(
    req: IncomingMessage,
    res: ServerResponse,
    type: string,
    id: string,
    revision: string,
    blobs: boolean,
  ): void {
    const repo = findRepo(req, res, type, id);
    if (!repo || !checkRevision(res, repo, revision)) return;
    const siblings = [...repo.files.values()].map((f) =>
      !blobs
        ? { rfilename: f.path }
        : f.lfs
          ? {
              rfilename: f.path,
              size: f.bytes.length,
              blobId: f.gitOid,
              lfs: { sha256: f.sha256, size: f.bytes.length, pointerSize: 134 },
            }
          : { rfilename: f.path, size: f.bytes.length, blobId: f.gitOid },
    );
    const body: Record<string, unknown> = {
      _id: `id-${repo.id}`,
      id: repo.id,
      sha: repo.commit,
      private: false,
      gated: repo.gated ? "manual" : false,
    };
    if (!repo.omitSiblings) body.siblings = siblings;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  }

  function treeApi(
    req: IncomingMessage,
    res: ServerResponse,
    type: string,
    id: string,
    revision: string,
    cursor: number,
  ): void {
    const repo = findRepo(req, res, type, id);
    if (!repo || !checkRevision(res, repo, revision)) return;
    const all = [...repo.files.values()].sort((a, b) => a.path.localeCompare(b.path));
    const page = all.slice(cursor, cursor + pageSize).map((f) => ({
      type: "file",
      oid: f.gitOid,
      size: f.bytes.length,
      path: f.path,
      ...(f.lfs ? { lfs: { oid: f.sha256, size: f.bytes.length, pointerSize: 134 } } : {}),
    }));
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (cursor + pageSize < all.length) {
      const next = new URL(req.url ?? "/", endpoint);
      next.searchParams.set("cursor", String(cursor + pageSize));
      headers.link = `<${next.href}>; rel="next"`;
    }
    res.writeHead(200, headers);
    res.end(JSON.stringify(page));
  }

  function resolveFile(
    req: IncomingMessage,
    res: ServerResponse,
    type: string,
    id: string,
    revision: string,
    path: string,
  ): void {
    const repo = findRepo(req, res, type, id, true);
    if (!repo || !checkRevision(res, repo, revision)) return;
    const file = repo.files.get(path);
    if (!file) {
      res.setHeader("x-repo-commit", repo.commit);
      return fail(res, 404, "EntryNotFound", `${path} does not exist on "${revision}"`);
    }
    if (file.lfs) {
      res.writeHead(302, {
        location: `${cdnOrigin}/lfs/${file.sha256}?name=${encodeURIComponent(path)}`,
        etag: `"${file.gitOid}"`,
        "x-linked-etag": `"${file.sha256}"`,
        "x-linked-size": String(file.bytes.length),
        "x-repo-commit": repo.commit,
        "content-length": "0",
      });
      return void res.end();
    }
    sendBytes(req, res, file, { etag: `"${file.gitOid}"`, "x-repo-commit": repo.commit });
  }

  function handleCdn(req: IncomingMessage, res: ServerResponse): void {
    log("cdn", req, res);
    const m = /^\/lfs\/([0-9a-f]{64})/.exec(req.url ?? "");
    const file = m ? byHash.get(m[1]!) : undefined;
    if (!file) {
      res.writeHead(404);
      return void res.end("no such object");
    }
    sendBytes(req, res, file, { etag: `"${file.sha256}"` });
  }

  /** 200 or 206 (Range), honouring cutNext / stallNext. */
  function sendBytes(
    req: IncomingMessage,
    res: ServerResponse,
    file: ServedFile,
    headers: Record<string, string>,
  ): void {
    const size = file.bytes.length;
    let start = 0;
    let end = size - 1;
    let status = 200;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start >= size) {
        res.writeHead(416, { "content-range": `bytes */${size}` });
        return void res.end();
      }
      status = 206;
      headers["content-range"] = `bytes ${start}-${end}/${size}`;
    }
    res.writeHead(status, {
      ...headers,
      "accept-ranges": "bytes",
      "content-length": String(end - start + 1),
      "content-type": "application/octet-stream",
    });
    if (req.method === "HEAD") return void res.end();
    let body = file.bytes.subarray(start, end + 1);
    if (corrupt.delete(file.path)) {
      body = Buffer.from(body);
      body[body.length >> 1]! ^= 0xff;
    }
    const cut = cuts.get(file.path);
    if (!cut) return void res.end(body);
    cuts.delete(file.path);
    // FIN, not RST: the client reads exactly afterBytes, then sees the connection end early.
    res.write(body.subarray(0, cut.afterBytes), () => {
      if (!cut.stall) res.socket?.end();
    });
  }

  const find = (repoId: string): Repo => {
    const repo = [...repos.values()].find((r) => r.id === repoId);
    if (!repo) throw new Error(`hub_server: no repo ${repoId}`);
    return repo;
  };

  return {
    endpoint,
    cdnOrigin,
    token,
    requests,
    commit: (repoId) => find(repoId).commit,
    file(repoId, path) {
      const file = find(repoId).files.get(path);
      if (!file) throw new Error(`hub_server: no file ${path} in ${repoId}`);
      return file;
    },
    cutNext: (path, afterBytes) => void cuts.set(path, { afterBytes, stall: false }),
    stallNext: (path, afterBytes) => void cuts.set(path, { afterBytes, stall: true }),
    corruptNext: (path) => void corrupt.add(path),
    async close() {
      for (const server of [hub, cdn]) {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
  };
}

/** Every environment variable huggingface_hub (and sdtune's hub client) reads. */
export const HF_ENV_KEYS = [
  "HF_HOME",
  "HF_HUB_CACHE",
  "HF_ENDPOINT",
  "HF_TOKEN",
  "HF_HUB_OFFLINE",
  "HF_TOKEN_PATH",
  "HUGGING_FACE_HUB_TOKEN",
  "HUGGINGFACE_HUB_CACHE",
  "TRANSFORMERS_OFFLINE",
  "XDG_CACHE_HOME",
  "HF_HUB_DISABLE_IMPLICIT_TOKEN",
] as const;

/**
 * Clears the hub environment, sets `values`, and returns a function that puts the
 * previous environment back: tests never see (or touch) the real cache or endpoint.
 */
export function isolateHubEnv(values: Partial<Record<(typeof HF_ENV_KEYS)[number], string>> = {}): () => void {
  const saved = Object.fromEntries(HF_ENV_KEYS.map((k) => [k, process.env[k]]));
  for (const k of HF_ENV_KEYS) delete process.env[k];
  Object.assign(process.env, values);
  return () => {
    for (const k of HF_ENV_KEYS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  };
}
