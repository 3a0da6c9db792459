// Hub settings as huggingface_hub (constants.py, utils/_token.py) reads them from
// the environment, re-read on every call so that tests and long-lived processes
// see changes. Explicit options win over the environment.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";

export const DEFAULT_ENDPOINT = "https://huggingface.co";
export const DEFAULT_REVISION = "main";

/** What every resolve call accepts for reaching the hub and its cache. */
export interface HubAccessOptions {
  /** Hub access token. Default: HF_TOKEN, then $HF_HOME/token. `false` sends none. */
  token?: string | false;
  /** Resolve from the cache only (also HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Hub base URL. Default: HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** Cache folder. Default: HF_HUB_CACHE, else $HF_HOME/hub. */
  cacheDir?: string;
}

export interface HubSettings {
  endpoint: string;
  cacheDir: string;
  offline: boolean;
  token: string | undefined;
  /** Seconds to wait for an API answer (HF_HUB_ETAG_TIMEOUT). */
  requestTimeoutS: number;
  /** Seconds a download may go without receiving data (HF_HUB_DOWNLOAD_TIMEOUT). */
  downloadTimeoutS: number;
}

const TRUE_VALUES = new Set(["1", "ON", "YES", "TRUE"]);

function isTrue(value: string | undefined): boolean {
  return value !== undefined && TRUE_VALUES.has(value.toUpperCase());
}

/** os.path.expandvars(os.path.expanduser(p)) for the common forms ($VAR, ${VAR}, ~). */
function expandPath(path: string): string {
  let out = path.replace(/\$(\w+)|\$\{(\w+)\}/g, (whole, a?: string, b?: string) => {
    const value = process.env[(a ?? b)!];
    return value === undefined ? whole : value;
  });
  if (out === "~" || out.startsWith("~/")) out = join(homedir(), out.slice(1));
  return resolve(out);
}

function env(name: string): string | undefined {
  const value = process.env[name];
  return value === undefined || value === "" ? undefined : value;
}

/** $HF_HOME, default $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface. */
export function hfHome(): string {
  return expandPath(env("HF_HOME") ?? join(env("XDG_CACHE_HOME") ?? join(homedir(), ".cache"), "huggingface"));
}

/** The hub cache folder: HF_HUB_CACHE, then the legacy HUGGINGFACE_HUB_CACHE, then $HF_HOME/hub. */
export function hubCacheDir(): string {
  return expandPath(env("HF_HUB_CACHE") ?? env("HUGGINGFACE_HUB_CACHE") ?? join(hfHome(), "hub"));
}

function cleanToken(token: string | undefined): string | undefined {
  const trimmed = token?.trim();
  return trimmed ? trimmed : undefined;
}

/** HF_TOKEN (or the legacy HUGGING_FACE_HUB_TOKEN), then the file HF_TOKEN_PATH / $HF_HOME/token. */
export function storedToken(): string | undefined {
  const fromEnv = cleanToken(env("HF_TOKEN") ?? env("HUGGING_FACE_HUB_TOKEN"));
  if (fromEnv) return fromEnv;
  const path = expandPath(env("HF_TOKEN_PATH") ?? join(hfHome(), "token"));
  if (!existsSync(path)) return undefined;
  try {
    return cleanToken(readFileSync(path, "utf8"));
  } catch {
    return undefined; // unreadable token file: behave as huggingface_hub, i.e. no token
  }
}

function positiveNumber(name: string, fallback: number): number {
  const raw = env(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}=${raw}: expected a number of seconds > 0`);
  return value;
}

/** Options merged over the environment. */
export function hubSettings(options: HubAccessOptions = {}): HubSettings {
  const endpoint = (options.endpoint ?? env("HF_ENDPOINT") ?? DEFAULT_ENDPOINT).replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]/.test(endpoint)) {
    throw new Error(
      `hub endpoint "${endpoint}" must be an http(s) URL such as ${DEFAULT_ENDPOINT} (option endpoint / HF_ENDPOINT)`,
    );
  }
  let token: string | undefined;
  if (typeof options.token === "string") token = cleanToken(options.token);
  else if (options.token !== false && !isTrue(env("HF_HUB_DISABLE_IMPLICIT_TOKEN"))) token = storedToken();
  return {
    endpoint,
    cacheDir: options.cacheDir ? expandPath(options.cacheDir) : hubCacheDir(),
    offline: options.offline ?? (isTrue(env("HF_HUB_OFFLINE")) || isTrue(env("TRANSFORMERS_OFFLINE"))),
    token,
    requestTimeoutS: positiveNumber("HF_HUB_ETAG_TIMEOUT", 10),
    downloadTimeoutS: positiveNumber("HF_HUB_DOWNLOAD_TIMEOUT", 10),
  };
}
