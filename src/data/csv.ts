// A small RFC 4180 CSV reader for metadata.csv: quoted fields, "" escapes,
// newlines inside quotes, CRLF or LF. The first row is the header.

export interface CsvTable {
  header: string[];
  /** Each row as column -> value, with its 1-based line number. */
  rows: { line: number; values: Record<string, string> }[];
  /** Rows whose field count differs from the header's. */
  malformed: { line: number; reason: string }[];
}

export function parseCsv(text: string): CsvTable {
  const records = splitRecords(text);
  const first = records.shift();
  if (!first) return { header: [], rows: [], malformed: [] };
  const header = first.fields.map((h) => h.trim());
  const rows: CsvTable["rows"] = [];
  const malformed: CsvTable["malformed"] = [];
  for (const record of records) {
    if (record.fields.length === 1 && record.fields[0] === "") continue; // blank line
    if (record.fields.length !== header.length) {
      malformed.push({
        line: record.line,
        reason: `has ${record.fields.length} fields but the header has ${header.length}`,
      });
      continue;
    }
    const values: Record<string, string> = {};
    header.forEach((name, i) => (values[name] = record.fields[i]!));
    rows.push({ line: record.line, values });
  }
  return { header, rows, malformed };
}

function splitRecords(text: string): { line: number; fields: string[] }[] {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const records: { line: number; fields: string[] }[] = [];
  let fields: string[] = [];
  let field = "";
  let quoted = false;
  let line = 1;
  let recordLine = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else {
        if (c === "\n") line++;
        field += c;
      }
    } else if (c === '"' && field === "") quoted = true;
    else if (c === ",") {
      fields.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      fields.push(field);
      records.push({ line: recordLine, fields });
      fields = [];
      field = "";
      line++;
      recordLine = line;
    } else field += c;
  }
  if (field !== "" || fields.length > 0) {
    fields.push(field);
    records.push({ line: recordLine, fields });
  }
  return records;
}
