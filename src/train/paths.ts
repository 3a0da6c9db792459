// Every path a training run writes lies inside its output_dir. Stage names are
// validated by the config schema; this is the second line: a path built from them
// is checked before anything is created or deleted there.
import { isAbsolute, join, relative, resolve, sep } from "node:path";

/** `path`, after checking that it lies strictly inside `runDir`; throws naming both otherwise. */
export function insideRun(runDir: string, path: string): string {
  const rel = relative(resolve(runDir), resolve(path));
  if (rel === "" || rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
    throw new Error(
      `${path} is not inside the run folder ${runDir}; a training run writes only inside its output_dir ` +
        "(check the stage names: letters, digits, '.', '_' and '-' only)",
    );
  }
  return path;
}

/** `<runDir>/<parts...>`, checked to lie inside the run folder. */
export const runPath = (runDir: string, ...parts: string[]): string => insideRun(runDir, join(runDir, ...parts));

/**
 * File-system errors while writing the run, said in words with the path and what to do:
 * Node's "ENOENT ... mkdir" for a read-only parent, or "ENOSPC ... write" with no path.
 */
export function explainFsError(error: unknown, runDir: string): unknown {
  const e = error as NodeJS.ErrnoException;
  if (!(error instanceof Error) || typeof e.code !== "string") return error;
  const where = e.path ?? runDir;
  if (e.code === "ENOSPC" || e.code === "EDQUOT") {
    return new Error(
      `${where}: the disk is full (${e.code}) while writing the run in ${runDir}. Free some space (or choose ` +
        "another output_dir) and run again with --resume latest: saved checkpoints are never torn.",
      { cause: error },
    );
  }
  if (e.code === "EROFS" || e.code === "EACCES" || e.code === "EPERM") {
    return new Error(
      `${where}: not writable (${e.code}); the run folder ${runDir} must be writable. Choose another output_dir ` +
        "or fix the folder's permissions.",
      { cause: error },
    );
  }
  if ((e.code === "ENOENT" || e.code === "ENOTDIR") && e.syscall === "mkdir") {
    return new Error(
      `${where}: cannot create the folder (${e.code}); check that the parent of ${runDir} exists and is writable, ` +
        "or choose another output_dir.",
      { cause: error },
    );
  }
  return error;
}
