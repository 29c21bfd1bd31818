// One pino logger per process; components get children with a `component` field so log lines
// can be filtered per capability (tunnel, rendezvous, relay, ...).
import { pino, type Logger, type LevelWithSilent } from 'pino'

export type { Logger }

export function createLogger (opts: { name: string, level?: LevelWithSilent }): Logger {
  return pino({
    name: opts.name,
    level: opts.level ?? (process.env.EDGEMESH_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime
  })
}
