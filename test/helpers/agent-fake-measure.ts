// A stand-in for the SMTP driver in agent tests: answers every measurement with an `ok`
// result after `delayMs`, or at once with what it has when the measurement is aborted (the
// driver's contract: it never rejects, and an abort ends it like its deadline).

import type { MeasureFn } from '../../firmware/agent/agent';
import { compactResult, newResult } from '../../firmware/result';

export function fakeMeasure(delayMs: number, onMeasure?: (target: string) => void): MeasureFn {
  return (options) =>
    new Promise((resolve) => {
      onMeasure?.(options.target);
      const finish = (): void => {
        clearTimeout(timer);
        const result = newResult({
          dst_name: options.target,
          dst_port: options.port ?? 25,
          af: options.af ?? 4,
          mode: options.mode ?? 'starttls',
          timestamp: Math.floor(Date.now() / 1000),
        });
        resolve(compactResult({ ...result, phase: 'quit', rt: delayMs, ...(options.msm_id !== undefined && { msm_id: options.msm_id }) }));
      };
      const timer = setTimeout(finish, delayMs);
      options.signal?.addEventListener('abort', finish, { once: true });
    });
}
