// The CLI's progress displays live in the library (src/io/progress_bar.ts; training's
// bar/plain-line view in src/train/progress_view.ts), so the API can show the same.
export { formatBytes, formatDuration, ProgressBar } from "../index.js";
