// Finds the relay's dead TCP connections (an agent that lost power or its network: no FIN, no
// RST) without libp2p's connection monitor. The monitor pings every connection in one tick
// every 10 s, each over a new stream (multistream-select, noise, yamux); with 1,000 agents that
// tick held the relay's event loop long enough to put punch coordination's p99 at 1.7 s (2.7 ms
// without it). Here each connection gets a yamux ping (one frame, no stream) once per interval,
// spread evenly over the interval's ticks; one unanswered within the timeout is aborted, which
// frees what it held (its reservation too: relay-host.ts releaseReservationsOfGonePeers).
import type { Connection } from '@libp2p/interface'
import type { Logger } from '../shared/logging.ts'

export interface LivenessOptions {
  /** each connection is pinged once per this many ms */
  intervalMs: number
  /** the sweep runs this often and pings 1/(intervalMs/tickMs) of the connections */
  tickMs: number
  /** a ping unanswered this long aborts the connection */
  timeoutMs: number
}

export const DEFAULT_LIVENESS: LivenessOptions = { intervalMs: 30_000, tickMs: 1_000, timeoutMs: 15_000 }

/** Which of `slices` slices a connection id belongs to (stable for the id, spread evenly). */
export function sliceOf (id: string, slices: number): number {
  let h = 2166136261
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619)
  return (h >>> 0) % slices
}

/** What the sweep needs of a connection: its id, and a ping that rejects when unanswered (yamux's). */
interface Pingable { id: string, status: string, abort: (err: Error) => void, muxer?: { ping?: (o: { signal: AbortSignal }) => Promise<number> } }

/** Starts the sweep over `connections()`; returns stop(). */
export function startLivenessSweep (connections: () => Connection[], log: Logger, opts: LivenessOptions = DEFAULT_LIVENESS): () => void {
  const slices = Math.max(1, Math.round(opts.intervalMs / opts.tickMs))
  let tick = 0
  let stopped = false
  // one controller per ping, ended by its own timer or by stop() (AbortSignal.any over a signal
  // living as long as the sweep kept every ping's composite signal around for a while)
  const inFlight = new Set<{ controller: AbortController, timer?: NodeJS.Timeout }>()
  const settle = (ping: { controller: AbortController, timer?: NodeJS.Timeout }): void => { clearTimeout(ping.timer); inFlight.delete(ping) }
  const timer = setInterval(() => {
    const slice = tick++ % slices
    for (const c of connections() as unknown as Pingable[]) {
      if (c.status !== 'open' || c.muxer?.ping == null || sliceOf(c.id, slices) !== slice) continue
      const ping: { controller: AbortController, timer?: NodeJS.Timeout } = { controller: new AbortController() }
      // the verdict waits for the I/O already received: after a stall of the event loop its timers
      // run before the sockets are read, and an answer waiting there must still count
      ping.timer = setTimeout(() => { setImmediate(() => { ping.controller.abort(new Error('ping timed out')) }) }, opts.timeoutMs)
      ping.timer.unref()
      inFlight.add(ping)
      c.muxer.ping({ signal: ping.controller.signal }).then(() => { settle(ping) }, (err: Error) => {
        settle(ping)
        if (stopped || c.status !== 'open') return
        log.debug({ connection: c.id, err: err.message }, 'connection did not answer a ping: aborted')
        c.abort(new Error(`no answer to a ping within ${opts.timeoutMs} ms`))
      })
    }
  }, opts.tickMs)
  timer.unref()
  return () => {
    stopped = true
    clearInterval(timer)
    for (const ping of inFlight) { clearTimeout(ping.timer); ping.controller.abort(new Error('liveness sweep stopped')) }
    inFlight.clear()
  }
}
