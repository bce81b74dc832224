// The agent's log: one JSON object per line on stderr, each with a stable event code, so a
// probe host can grep it and a fleet operator can ship it. Fields are small facts, never
// payloads.

export type LogFields = Record<string, string | number | boolean | undefined>;
export type Log = (event: string, fields?: LogFields) => void;

export function jsonLinesLog(write: (line: string) => void, now: () => number = Date.now): Log {
  return (event, fields) => write(`${JSON.stringify({ ts: new Date(now()).toISOString(), event, ...fields })}\n`);
}
