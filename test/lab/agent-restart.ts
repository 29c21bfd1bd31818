// Restarts one agent of a lab mesh while a client pod sends a request to a Service every 100 ms
// (workload.mjs ticker), and reports when requests stopped and started succeeding again against
// the restart's own milestones: signal sent, old process gone, new process spawned, new process
// ready (the time in its "edgemesh-agent ready" log line). Used by the restart e2e test and by
// `npm run bench:proxy` (restart_gap_ms). Every time is epoch ms (the lab shares the host's clock).
import { join } from 'node:path'
import type { Lab, LabPod } from './lab.ts'
import type { Mesh } from './mesh.ts'
import { eventually } from './wait.ts'

const WORKLOAD = join(import.meta.dirname, 'workload.mjs')

export interface TickerRequest { s: number, e: number, ok: boolean, r: string }

export interface RestartReport {
  signal: NodeJS.Signals
  signalAt: number
  exitedAt: number
  spawnedAt: number
  readyAt: number
  /** the last successful response before the old agent had exited (it serves while it shuts down) */
  lastOkBefore: number
  /** the first successful request that started after the old agent had exited */
  firstOkAfter: TickerRequest
  /** requests that started after the old agent had exited, in start order */
  after: TickerRequest[]
  /** failed requests that started after the signal */
  failed: TickerRequest[]
  /** the agent's own start-up: spawn to ready */
  startupMs: number
  /** signal -> the first successful new request's response */
  signalToFirstOkMs: number
  /** no successful response for this long (last one before, first one after) */
  outageMs: number
}

/** Parses the ticker's JSON lines (a partial last line is skipped). */
export function tickerRequests (stdout: string): TickerRequest[] {
  const out: TickerRequest[] = []
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{') || !line.endsWith('}')) continue
    try { out.push(JSON.parse(line) as TickerRequest) } catch {}
  }
  return out.sort((a, b) => a.s - b.s)
}

/** The time of an agent's "edgemesh-agent ready" line (pino's ISO time), or now. */
function readyTime (line: string): number {
  try { const t = Date.parse(JSON.parse(line.slice(line.indexOf('{'))).time); if (Number.isFinite(t)) return t } catch {}
  return Date.now()
}

/**
 * Restarts the agent on `host` with `signal` while `client` requests `url` every `intervalMs`.
 * Returns once `settleOk` requests in a row that started after the new agent was ready have
 * succeeded (or throws after `timeoutMs`).
 */
export async function restartUnderTraffic (lab: Lab, mesh: Mesh, opts: { host: string, client: LabPod, url: string, signal: NodeJS.Signals, intervalMs?: number, settleOk?: number, timeoutMs?: number }): Promise<RestartReport> {
  const intervalMs = opts.intervalMs ?? 100
  const settleOk = opts.settleOk ?? 30
  const ticker = lab.spawn(opts.client, [process.execPath, WORKLOAD, 'ticker', opts.url, String(intervalMs)])
  try {
    // traffic flows before the restart
    await eventually(async () => {
      const rs = tickerRequests(ticker.stdout()).slice(-5)
      if (rs.length < 5 || !rs.every((r) => r.ok)) throw new Error(`ticker not answered yet: ${JSON.stringify(rs.at(-1))}`)
    }, 30_000, 100)
    const agent = mesh.agent(opts.host)
    const signalAt = Date.now()
    await agent.proc.kill(opts.signal, 10_000)
    const exitedAt = Date.now()
    const spawnedAt = Date.now()
    await mesh.startAgent(agent)
    const readyAt = readyTime(await agent.proc.waitForLine(/edgemesh-agent ready/, 1_000))
    await eventually(async () => {
      const rs = tickerRequests(ticker.stdout()).filter((r) => r.s >= readyAt)
      let run = 0
      for (const r of rs) run = r.ok ? run + 1 : 0
      if (run < settleOk) throw new Error(`${run} successful requests in a row since the agent was ready (want ${settleOk}); last: ${JSON.stringify(rs.at(-1))}`)
    }, opts.timeoutMs ?? 60_000, 100)
    const all = tickerRequests(ticker.stdout())
    const after = all.filter((r) => r.s >= exitedAt)
    const firstOkAfter = after.filter((r) => r.ok).sort((a, b) => a.e - b.e)[0]!
    const lastOkBefore = Math.max(...all.filter((r) => r.ok && r.e <= exitedAt).map((r) => r.e))
    return {
      signal: opts.signal,
      signalAt,
      exitedAt,
      spawnedAt,
      readyAt,
      lastOkBefore,
      firstOkAfter,
      after,
      failed: all.filter((r) => r.s >= signalAt && !r.ok),
      startupMs: readyAt - spawnedAt,
      signalToFirstOkMs: firstOkAfter.e - signalAt,
      outageMs: firstOkAfter.e - lastOkBefore
    }
  } finally {
    await ticker.kill()
  }
}

/** One line for the test's output. */
export function describeRestart (r: RestartReport): string {
  const rel = (t: number): string => `${((t - r.signalAt) / 1000).toFixed(2)} s`
  const failedAfterReady = r.failed.filter((f) => f.s >= r.readyAt)
  const firstAfterReady = r.after.find((q) => q.s >= r.readyAt)
  return `${r.signal}: old agent gone at ${rel(r.exitedAt)}, new one spawned at ${rel(r.spawnedAt)} and ready at ${rel(r.readyAt)} (start-up ${r.startupMs} ms); ` +
    `first successful new request answered at ${rel(r.firstOkAfter.e)} (${r.firstOkAfter.e - r.readyAt} ms after ready, ${r.firstOkAfter.e - r.spawnedAt} ms after start); ` +
    `gap ${r.outageMs} ms with no successful response; ${r.failed.length} requests failed, ${failedAfterReady.length} of them started after ready` +
    (failedAfterReady.length > 0 ? ` (last at ready + ${failedAfterReady.at(-1)!.s - r.readyAt} ms: ${failedAfterReady.at(-1)!.r})` : '') +
    (firstAfterReady != null ? `; the first request started after ready began at ready + ${firstAfterReady.s - r.readyAt} ms and took ${firstAfterReady.e - firstAfterReady.s} ms (${firstAfterReady.ok ? 'ok' : firstAfterReady.r})` : '')
}
