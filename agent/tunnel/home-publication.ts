// When the home relay goes into this node's peer record. Every write of a record is one watch
// event to every agent, so a relay that fails with k agents homed on it would cost k x N events
// if each moved agent published its new home at once (10,000 nodes, 3 relays: 33 million).
// Peers do not need it to reach us (they rank the relays themselves and skip a relay that does
// not answer), so it is published only when it says something the ranking does not, and only
// once it has held for a while:
//   - the home the ranking gives (the first of rankRelays over all configured relays) is never
//     published: nothing is written while every relay is up;
//   - another home is published after it has held for settleMs plus a random part of jitterMs
//     (a relay lost for good), and withdrawn the same way when the ranking's first is home again;
//     a relay that restarts or flaps writes nothing.
export interface HomePublicationTimers {
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

export interface HomePublicationOptions {
  /** the first relay of this agent's ranking over all configured relays */
  rankedFirst: string
  /** the record's homeRelay: undefined withdraws it */
  publish: (homeRelay: string | undefined) => void
  settleMs?: number
  jitterMs?: number
  random?: () => number
  timers?: HomePublicationTimers
}

export const HOME_SETTLE_MS = 120_000
export const HOME_JITTER_MS = 60_000

const realTimers: HomePublicationTimers = {
  setTimeout: (fn, ms) => { const t = setTimeout(fn, ms); t.unref(); return t },
  clearTimeout: (h) => { clearTimeout(h as NodeJS.Timeout) }
}

/** What the record should say for this home: nothing when the ranking already tells peers. */
export function homeToPublish (home: string | undefined, rankedFirst: string): string | undefined {
  return home == null || home === rankedFirst ? undefined : home
}

export class HomePublication {
  private readonly opts: HomePublicationOptions
  private readonly timers: HomePublicationTimers
  /** what the record says (as far as this agent asked for) */
  private published: string | undefined
  private pending: { value: string | undefined, timer: unknown } | undefined
  private stopped = false

  /** `initial`: the home at start-up, published as is (the record is written at start anyway). */
  constructor (opts: HomePublicationOptions, initial: string | undefined) {
    this.opts = opts
    this.timers = opts.timers ?? realTimers
    this.published = homeToPublish(initial, opts.rankedFirst)
  }

  /** The record's homeRelay at start-up. */
  get initial (): string | undefined { return this.published }

  /** The tunnel's home changed (or was confirmed). */
  observe (home: string): void {
    if (this.stopped) return
    const value = homeToPublish(home, this.opts.rankedFirst)
    if (this.pending != null) {
      if (this.pending.value === value) return // already on its way: the wait is not restarted
      this.timers.clearTimeout(this.pending.timer)
      this.pending = undefined
    }
    if (value === this.published) return
    const settle = this.opts.settleMs ?? HOME_SETTLE_MS
    const jitter = (this.opts.jitterMs ?? HOME_JITTER_MS) * (this.opts.random ?? Math.random)()
    const timer = this.timers.setTimeout(() => {
      this.pending = undefined
      if (this.stopped) return
      this.published = value
      this.opts.publish(value)
    }, settle + jitter)
    this.pending = { value, timer }
  }

  stop (): void {
    this.stopped = true
    if (this.pending != null) this.timers.clearTimeout(this.pending.timer)
    this.pending = undefined
  }
}
