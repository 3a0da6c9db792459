// `sdtune info`: what the addon was built against and what it runs on.
import { formatBytes } from "../index.js";
import { addonPath, native } from "../native/index.js";
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
    const info = native().info();
    const report = {
      sdtuneAddon: addonPath(),
      libtorch: info.libtorchVersion,
      libtorchFrom: info.torchSource,
      threads: info.threads,
      cores: info.cores,
      blas: info.blasLibraries,
      cuda: info.cuda,
      node: process.version,
    };
    if (values.json) {
      console.log(JSON.stringify(report, null, 2));
      return 0;
    }
    const cuda = info.cuda.available
      ? info.cuda.devices.map((d) => `${d.name} (sm ${d.capability}, ${formatBytes(d.memoryBytes)})`).join(", ")
      : info.cuda.built
        ? "built with CUDA, but no GPU is visible"
        : "not built with CUDA (CPU only)";
    console.log(
      [
        `addon     ${report.sdtuneAddon}`,
        `libtorch  ${report.libtorch} (${report.libtorchFrom})`,
        `threads   ${report.threads} of ${report.cores} cores (set SDTUNE_NUM_THREADS to change)`,
        `BLAS      ${report.blas.length ? report.blas.join(", ") : "none loaded yet"}`,
        `CUDA      ${cuda}`,
        `node      ${report.node}`,
      ].join("\n"),
    );
    return 0;
  },
};
