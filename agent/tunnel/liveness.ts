// Dead-path detection for tunnel connections, in seconds rather than the UDX timeout (~13 s).
// Each watched connection reports a number that grows whenever anything arrives from the peer
// (udx packets, acks included). Once a connection has been silent for PROBE_AFTER_MS it is
// probed (a yamux ping, which a live peer answers whatever its streams' backpressure); silent
// for DEAD_AFTER_MS it is declared dead, so its owner aborts it and the next stream dials afresh
// (a peer whose agent was killed, or restarted and lost every session).
//
// One timer serves every connection. Silence only accumulates on ticks that ran on time: after
// our own event loop stalled, packets that arrived meanwhile may still be unread, so a late tick
// is no evidence against the peer (nor for it: the silence so far is kept, so a loaded agent
// still notices a dead peer, only later).

export const TICK_MS = 500
export const PROBE_AFTER_MS = 1_000
export const DEAD_AFTER_MS = 3_000

export interface LivenessSettings {
  tickMs: number
  probeAfterMs: number
  deadAfterMs: number
}

export const DEFAULT_LIVENESS: LivenessSettings = { tickMs: TICK_MS, probeAfterMs: PROBE_AFTER_MS, deadAfterMs: DEAD_AFTER_MS }

/** What the monitor remembers about one connection. */
export interface LivenessState {
  received: number
  silentMs: number
}

export type LivenessAction = 'none' | 'probe' | 'dead'

/**
 * The pure core: one tick's verdict. `elapsedMs` is the time since the previous tick; a tick
 * later than twice the period adds no silence (our own stall, not the peer's).
 */
export function livenessStep (state: LivenessState, received: number, elapsedMs: number, s: LivenessSettings): { state: LivenessState, action: LivenessAction } {
  if (received !== state.received) return { state: { received, silentMs: 0 }, action: 'none' }
  if (elapsedMs > 2 * s.tickMs) return { state, action: 'none' }
  const silentMs = state.silentMs + elapsedMs
  if (silentMs >= s.deadAfterMs) return { state: { received, silentMs }, action: 'dead' }
  return { state: { received, silentMs }, action: silentMs >= s.probeAfterMs ? 'probe' : 'none' }
}

export interface LivenessTarget {
  /** grows whenever anything arrives from the peer */
  received: () => number
  /** asks the peer for an answer (it shows up in received()); must not throw */
  probe: () => void
  /** the peer stopped answering; called once, after which the target is no longer watched */
  dead: (silentMs: number) => void
  /**
   * true when the silence has another explanation that is handled elsewhere (a relayed path
   * whose relay stopped answering too: its restart or its loss closes the path with that cause);
   * asked again on every tick while it lasts
   */
  excused?: (silentMs: number) => boolean
}

export interface LivenessTimers {
  now: () => number
  setInterval: (fn: () => void, ms: number) => unknown
  clearInterval: (handle: unknown) => void
}

const realTimers: LivenessTimers = {
  now: () => performance.now(),
  setInterval: (fn, ms) => { const t = setInterval(fn, ms); t.unref(); return t },
  clearInterval: (h) => { clearInterval(h as NodeJS.Timeout) }
}

export class LivenessMonitor {
  private readonly settings: LivenessSettings
  private readonly timers: LivenessTimers
  private readonly watched = new Map<LivenessTarget, LivenessState>()
  private handle: unknown
  private lastTick = 0

  constructor (settings: LivenessSettings = DEFAULT_LIVENESS, timers: LivenessTimers = realTimers) {
    this.settings = settings
    this.timers = timers
  }

  /** Watches a connection until it is declared dead or the returned function is called. */
  watch (target: LivenessTarget): () => void {
    this.watched.set(target, { received: target.received(), silentMs: 0 })
    if (this.handle == null) {
      this.lastTick = this.timers.now()
      this.handle = this.timers.setInterval(() => { this.tick() }, this.settings.tickMs)
    }
    return () => { this.unwatch(target) }
  }

  get size (): number { return this.watched.size }

  private unwatch (target: LivenessTarget): void {
    this.watched.delete(target)
    if (this.watched.size === 0 && this.handle != null) {
      this.timers.clearInterval(this.handle)
      this.handle = undefined
    }
  }

  private tick (): void {
    const now = this.timers.now()
    const elapsed = now - this.lastTick
    this.lastTick = now
    for (const [target, state] of [...this.watched]) {
      const { state: next, action } = livenessStep(state, target.received(), elapsed, this.settings)
      this.watched.set(target, next)
      if (action === 'probe' || (action === 'dead' && target.excused?.(next.silentMs) === true)) {
        target.probe() // excused: keep asking, an answer clears the silence
        continue
      }
      if (action === 'dead') {
        this.unwatch(target)
        target.dead(next.silentMs)
      }
    }
  }

  stop (): void {
    for (const t of [...this.watched.keys()]) this.unwatch(t)
  }
}
