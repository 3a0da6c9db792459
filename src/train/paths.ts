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
