// When the proxy's rule syncs run. The pacing is a token bucket (kube-proxy's
// BoundedFrequencyRunner shape): after a quiet period the bucket is full, so the first change
// syncs at once (leading edge), and so do the next `burst - 1` (a new Service and its
// EndpointSlice arrive a few ms apart and each needs its own sync: the name must not wait out an
// interval behind a sync that had no endpoints yet); sustained churn gets one sync per
// `minIntervalMs`. At most one sync runs; every change that arrives while one waits or runs
// shares the next. A failed sync is retried after the caller's backoff. The clock and timers are
// injected, so the whole schedule is testable without real time.

export interface Timers {
  now: () => number
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

export const realTimers: Timers = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => { clearTimeout(h as NodeJS.Timeout) }
}

export interface SyncPacerOptions {
  /** steady-state spacing of sync starts; 0 = no limit */
  minIntervalMs: number
  /** syncs that may start back to back after a quiet period (>= 1) */
  burst: number
}

/** The token bucket alone: how long until a sync may start. Pure: the caller passes the time. */
export class SyncPacer {
  private readonly interval: number
  private readonly burst: number
  private tokens: number
  private at: number

  constructor (opts: SyncPacerOptions, now: number) {
    if (!Number.isInteger(opts.burst) || opts.burst < 1) throw new RangeError(`burst: want an integer >= 1, got ${opts.burst}`)
    if (!(opts.minIntervalMs >= 0)) throw new RangeError(`minIntervalMs: want >= 0, got ${opts.minIntervalMs}`)
    this.interval = opts.minIntervalMs
    this.burst = opts.burst
    this.tokens = opts.burst
    this.at = now
  }

  private refill (now: number): void {
    if (now <= this.at) return
    this.tokens = Math.min(this.burst, this.tokens + (now - this.at) / this.interval)
    this.at = now
  }

  /** ms until a sync may start (0: now). */
  delay (now: number): number {
    if (this.interval === 0) return 0
    this.refill(now)
    // the epsilon: tokens are sums of fractions, and (1 - 0.6488...) * 225 came out as
    // 79.00000000000001, a 1 ms late start (found by the model test)
    return this.tokens >= 1 ? 0 : Math.ceil((1 - this.tokens) * this.interval - 1e-9)
  }

  /** A sync started at `now`; one started early (at start-up, a retry) takes what is left. */
  started (now: number): void {
    if (this.interval === 0) return
    this.refill(now)
    this.tokens = Math.max(0, this.tokens - 1)
  }
}

export interface SyncSchedulerOptions extends SyncPacerOptions {
  /** one sync; a rejection is a failure (the caller logs it), retried after retryDelayMs */
  run: () => Promise<void>
  /** wait before retrying after the n-th failure in a row (n >= 1) */
  retryDelayMs: (failures: number) => number
  timers?: Timers
}

export class SyncScheduler {
  private readonly opts: SyncSchedulerOptions
  private readonly timers: Timers
  private readonly pacer: SyncPacer
  private running: Promise<void> | undefined
  private timer: unknown
  private dirty = false
  private stopped = false
  /** failed syncs in a row */
  failures = 0

  constructor (opts: SyncSchedulerOptions) {
    this.opts = opts
    this.timers = opts.timers ?? realTimers
    this.pacer = new SyncPacer(opts, this.timers.now())
  }

  /** Something changed: a sync will start at once, or when the pacing allows, or after the running one. */
  request (): void {
    if (this.stopped) return
    this.dirty = true
    if (this.running != null || this.timer != null) return
    this.schedule()
  }

  /** Runs a sync now (after the running one, if any), whatever the pacing; resolves when it ended. Never rejects. */
  async runNow (): Promise<void> {
    while (this.running != null) await this.running
    if (this.stopped) return
    this.cancelTimer()
    this.start()
    await this.running
  }

  /** No sync starts after this; resolves once the running one (if any) ended. */
  async stop (): Promise<void> {
    this.stopped = true
    this.cancelTimer()
    while (this.running != null) await this.running
  }

  private cancelTimer (): void {
    if (this.timer == null) return
    this.timers.clearTimeout(this.timer)
    this.timer = undefined
  }

  private schedule (): void {
    const wait = this.pacer.delay(this.timers.now())
    if (wait === 0) { this.start(); return }
    this.timer = this.timers.setTimeout(() => { this.timer = undefined; this.start() }, wait)
  }

  private start (): void {
    if (this.stopped || this.running != null) return
    this.dirty = false
    this.pacer.started(this.timers.now())
    let ok = true
    let sync: Promise<void>
    try { sync = this.opts.run() } catch (err) { sync = Promise.reject(err) }
    this.running = sync.catch(() => { ok = false }).then(() => {
      this.running = undefined
      if (this.stopped) return
      if (!ok) {
        this.failures++
        this.dirty = true
        this.cancelTimer()
        this.timer = this.timers.setTimeout(() => { this.timer = undefined; this.start() }, this.opts.retryDelayMs(this.failures))
        return
      }
      this.failures = 0
      if (this.dirty && this.timer == null) this.schedule()
    })
  }
}
