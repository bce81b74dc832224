// The per-target table across probes: for each target, the latest result of each probe, with
// whether STARTTLS was offered, the TLS version and the findings. A probe that does not see
// STARTTLS where another probe does is on a path that removes it (a downgrading middlebox),
// so its row is marked STRIPPED?: comparing paths is what no single probe can do.

import type { PublishedResult } from '../../firmware/agent/protocol';

/** What the probe saw of STARTTLS in the first EHLO reply. */
export type StarttlsSeen = 'yes' | 'no' | 'mangled' | '-';

export interface TableRow {
  target: string;
  probe: string;
  status: string;
  phase: string;
  starttls: StarttlsSeen;
  tls: string;
  findings: string[];
  /** STARTTLS missing or mangled here while another probe saw it offered for the same target */
  stripped: boolean;
  timestamp: number;
}

export const STRIPPED_MARK = 'STRIPPED?';

/** Only the fields the table reads, so that stored records of any minor version fit. */
export type TableInput = Pick<PublishedResult, 'probe_id' | 'dst_name' | 'dst_port' | 'status' | 'phase' | 'timestamp' | 'findings'> &
  Partial<Pick<PublishedResult, 'ehlo' | 'tls' | 'mode'>>;

export function starttlsSeen(result: TableInput): StarttlsSeen {
  if (result.findings.includes('starttls-capability-mangled')) return 'mangled';
  if (result.mode !== undefined && result.mode !== 'starttls') return '-';
  if (!result.ehlo) return '-';
  return Object.prototype.hasOwnProperty.call(result.ehlo.capabilities, 'STARTTLS') ? 'yes' : 'no';
}

export function targetOf(result: Pick<TableInput, 'dst_name' | 'dst_port'>): string {
  return `${result.dst_name}:${result.dst_port}`;
}

/** Rows sorted by target then probe, the latest result (by timestamp) of each pair. */
export function buildTable(results: Iterable<TableInput>): TableRow[] {
  const latest = new Map<string, TableInput>();
  for (const result of results) {
    const key = `${targetOf(result)}\u0000${result.probe_id}`;
    const previous = latest.get(key);
    if (!previous || result.timestamp >= previous.timestamp) latest.set(key, result);
  }
  const rows: TableRow[] = [...latest.values()].map((result) => ({
    target: targetOf(result),
    probe: result.probe_id,
    status: result.status,
    phase: result.phase,
    starttls: starttlsSeen(result),
    tls: result.tls?.ver ?? '-',
    findings: [...result.findings],
    stripped: false,
    timestamp: result.timestamp,
  }));
  const offeredSomewhere = new Set(rows.filter((row) => row.starttls === 'yes').map((row) => row.target));
  for (const row of rows) row.stripped = (row.starttls === 'no' || row.starttls === 'mangled') && offeredSomewhere.has(row.target);
  rows.sort((a, b) => (a.target === b.target ? a.probe.localeCompare(b.probe) : a.target.localeCompare(b.target)));
  return rows;
}

const HEADERS = ['target', 'probe', 'status', 'starttls', 'tls', 'findings', 'path'];

/** Plain text, one line per row; the target is printed once per group. */
export function renderTable(rows: TableRow[]): string {
  const cells = rows.map((row, index) => [
    index > 0 && rows[index - 1].target === row.target ? '' : row.target,
    row.probe,
    row.status === 'ok' ? 'ok' : `${row.status}@${row.phase}`,
    row.starttls,
    row.tls,
    row.findings.length > 0 ? row.findings.join(',') : '-',
    row.stripped ? STRIPPED_MARK : '',
  ]);
  const widths = HEADERS.map((header, column) => Math.max(header.length, ...cells.map((line) => line[column].length)));
  const format = (line: string[]): string => line.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd();
  return [format(HEADERS), format(widths.map((width) => '-'.repeat(width))), ...cells.map(format)].join('\n') + '\n';
}
