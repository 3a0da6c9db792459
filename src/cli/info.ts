// `sdtune info`: what the addon was built against and what it runs on.
import { formatBytes, runtimeInfo, type RuntimeReport } from "../index.js";
import { parseCommandArgs, type Command } from "./command.js";

export const command: Command = {
  help: [
    "usage: sdtune info [--json]",
    "",
    "Prints the libtorch version, CUDA availability and devices, threads, the BLAS",
    "in use and the addon's path.",
  ].join("\n"),
  async run(argv) {
    const { values } = parseCommandArgs(argv, { json: { type: "boolean" } }, false);
    const report = runtimeInfo();
    if (values.json) {
      // "sdtuneAddon" is the key this output has always used.
      const { addon, ...rest } = report;
      console.log(JSON.stringify({ sdtuneAddon: addon, ...rest }, null, 2));
      return 0;
    }
    const cuda = report.cuda.available
      ? report.cuda.devices.map((d) => `${d.name} (sm ${d.capability}, ${formatBytes(d.memoryBytes)})`).join(", ")
      : report.cuda.built
        ? "built with CUDA, but no GPU is visible"
        : "not built with CUDA (CPU only)";
    console.log(
      [
        `addon     ${report.addon}`,
        `libtorch  ${report.libtorch} (${report.libtorchFrom})`,
        `threads   ${report.threads} of ${report.cores} cores (set SDTUNE_NUM_THREADS to change)`,
        `BLAS      ${report.blas.length ? report.blas.join(", ") : "none loaded yet"}`,
        `BLAS pool ${report.blasThreads.openblas ? `${report.blasThreads.threads} thread(s): ${report.blasThreads.note}` : report.blasThreads.note}`,
        `malloc    ${report.malloc.join(", ")}`,
        `kernels   ${cpuKernels(report.cpuKernels)}`,
        `CUDA      ${cuda}`,
        `node      ${report.node}`,
      ].join("\n"),
    );
    return 0;
  },
};

/** One line on sdtune's own CPU kernels: which are on, and on how many threads. */
function cpuKernels(k: RuntimeReport["cpuKernels"]): string {
  const on = (yes: boolean): string => (yes ? "on" : "off");
  return (
    `split products ${on(k.splitProducts)} (SDTUNE_PARALLEL_GEMM), blocked attention ${on(k.blockedAttention)} ` +
    `(SDTUNE_BLOCKED_ATTENTION), ${k.parallelForThreads} thread(s)`
  );
}
