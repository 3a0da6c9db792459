// Runs the CLI from the TypeScript sources (spawned with `node --import tsx`), so
// tests that need a real process (signals, exit codes) do not depend on dist/.
const { main } = await import("../../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
