// The sdtune CLI from the TypeScript sources (benchmarks spawn it with `node --import tsx`).
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
