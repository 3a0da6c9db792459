// Which layers a new LoRA goes on: peft's `target_modules` semantics
// (tuners_utils.check_target_module_exists, peft 0.10). A list matches a module whose
// path equals an entry or ends with "." + entry ("to_q" -> "...attn1.to_q",
// "to_out.0" -> "...attn1.to_out.0"); a single string is a regular expression that
// must match the whole path (re.fullmatch).

/** A model's submodules as the native side lists them: kind "linear" / "conv2d" are adaptable. */
export interface ModuleEntry {
  path: string;
  kind: string;
}

export type LoraTargets = string[] | string;

const ADAPTABLE = new Set(["linear", "conv2d"]);

/**
 * The module paths `targets` selects, in module order. Throws when a target entry matches
 * nothing (a typo would otherwise train fewer layers than asked) or when a matched module
 * is not a Linear / Conv2d layer (peft refuses those too). `what` names the model in errors.
 */
export function matchTargets(modules: readonly ModuleEntry[], targets: LoraTargets, what: string): string[] {
  const problems: string[] = [];
  let matches: (path: string) => boolean;
  if (typeof targets === "string") {
    let pattern: RegExp;
    try {
      pattern = new RegExp(`^(?:${targets})$`);
    } catch (error) {
      throw new Error(
        `${what}: LoRA targets /${targets}/ is not a valid regular expression (${(error as Error).message})`,
      );
    }
    matches = (path) => pattern.test(path);
    if (!modules.some((m) => matches(m.path))) problems.push(`the pattern /${targets}/ matches no module`);
  } else {
    if (!Array.isArray(targets) || targets.length === 0 || !targets.every((t) => typeof t === "string" && t)) {
      throw new TypeError(`${what}: LoRA targets must be a non-empty list of module names or a regular expression`);
    }
    const hits = (path: string, target: string): boolean => path === target || path.endsWith(`.${target}`);
    matches = (path) => targets.some((t) => hits(path, t));
    for (const target of targets) {
      if (!modules.some((m) => hits(m.path, target))) problems.push(`"${target}" matches no module`);
    }
  }
  const selected = modules.filter((m) => matches(m.path));
  for (const m of selected) {
    if (!ADAPTABLE.has(m.kind)) problems.push(`${m.path} is a ${m.kind}, not a Linear or Conv2d layer`);
  }
  if (problems.length) {
    throw new Error(`${what}: cannot place LoRA adapters:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
  return selected.map((m) => m.path);
}
