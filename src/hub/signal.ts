// An AbortController that follows other signals. Used instead of
// AbortSignal.any(), whose composite signals Node 20 may garbage-collect while
// only fetch() refers to them, so that an abort would never arrive.

export interface LinkedController {
  signal: AbortSignal;
  abort(reason?: unknown): void;
  /** Stops following the sources (call when done, so listeners do not pile up). */
  dispose(): void;
}

export function linkedController(...sources: (AbortSignal | undefined)[]): LinkedController {
  const controller = new AbortController();
  const listeners: [AbortSignal, () => void][] = [];
  for (const source of sources) {
    if (!source) continue;
    if (source.aborted) {
      controller.abort(source.reason);
      break;
    }
    const forward = (): void => controller.abort(source.reason);
    source.addEventListener("abort", forward, { once: true });
    listeners.push([source, forward]);
  }
  return {
    signal: controller.signal,
    abort: (reason) => controller.abort(reason),
    dispose: () => listeners.forEach(([source, forward]) => source.removeEventListener("abort", forward)),
  };
}
