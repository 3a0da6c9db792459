// Byte counts for people, the one formatter: binary (IEC) units, 1024 apart, named as
// such (B, KiB, MiB, GiB, TiB), one decimal from KiB up: "512 B", "1.5 KiB", "3.2 GiB".

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? String(Math.round(value)) : value.toFixed(1)} ${UNITS[unit]}`;
}
