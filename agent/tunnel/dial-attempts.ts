// One dial to a peer as a series of attempts (each: the relay's introduction and every leg,
// dialer.ts), so a dial in progress never holds later requests hostage:
//   - an attempt that has not connected after FRESH_AFTER_MS (1 s; a live peer's dial takes tens of
//     ms, a few hundred on a loaded machine) gets a fresh one beside it: the
//     first may have been introduced to a stale registration (the peer's agent restarting), and
//     the relay's next answer reflects the peer's new registration;
//   - an attempt that failed because the peer is absent right now (no circuit reservation, the
//     relay does not know it over UDP: its agent is restarting) is followed by another after
//     RETRY_AFTER_MS, so the dial succeeds as soon as the peer is back;
//   - any other failure (refused, wrong key) ends the dial at once.
// The first connection wins; the other attempts are aborted (the winner's own legs go on and
// may still open a better path). Requests that arrive meanwhile join the dial (tunnel.ts).

export const FRESH_AFTER_MS = 1_000
export const RETRY_AFTER_MS = 250
/** an attempt at an absent peer lasts up to ~6.5 s (punch, then circuit); this many rarely block a fresh one */
export const MAX_CONCURRENT_ATTEMPTS = 6

export interface AttemptSettings {
  freshAfterMs: number
  retryAfterMs: number
  maxConcurrent: number
}

export const DEFAULT_ATTEMPTS: AttemptSettings = { freshAfterMs: FRESH_AFTER_MS, retryAfterMs: RETRY_AFTER_MS, maxConcurrent: MAX_CONCURRENT_ATTEMPTS }

export interface AttemptTimers {
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

const realTimers: AttemptTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => { clearTimeout(h as NodeJS.Timeout) }
}

/**
 * Runs `attempt` until one succeeds, `signal` aborts, or one fails with an error that is not
 * `retryable`. Rejects with the last attempt's error (or the signal's reason
 * when no attempt failed yet).
 */
export async function dialWithAttempts<T> (
  attempt: (signal: AbortSignal, n: number) => Promise<T>,
  opts: { signal: AbortSignal, retryable: (err: unknown) => boolean, settings?: AttemptSettings, timers?: AttemptTimers, onAttempt?: (n: number, why: 'first' | 'fresh' | 'retry') => void }
): Promise<T> {
  const s = opts.settings ?? DEFAULT_ATTEMPTS
  const timers = opts.timers ?? realTimers
  return await new Promise<T>((resolve, reject) => {
    const running = new Set<AbortController>()
    let n = 0
    let done = false
    let lastError: unknown
    let timer: unknown
    const finish = (fn: () => void): void => {
      if (done) return
      done = true
      if (timer != null) timers.clearTimeout(timer)
      opts.signal.removeEventListener('abort', onAbort)
      fn()
    }
    const onAbort = (): void => {
      for (const c of running) c.abort(opts.signal.reason)
      finish(() => { reject(lastError ?? opts.signal.reason) })
    }
    const schedule = (ms: number, why: 'fresh' | 'retry'): void => {
      if (timer != null) timers.clearTimeout(timer)
      timer = timers.setTimeout(() => { timer = undefined; start(why) }, ms)
    }
    const start = (why: 'first' | 'fresh' | 'retry'): void => {
      if (done) return
      if (running.size >= s.maxConcurrent) { schedule(s.freshAfterMs, 'fresh'); return }
      const ctl = new AbortController()
      const signal = AbortSignal.any([opts.signal, ctl.signal])
      running.add(ctl)
      const k = ++n
      opts.onAttempt?.(k, why)
      attempt(signal, k).then((value) => {
        running.delete(ctl)
        finish(() => {
          for (const c of running) c.abort(new Error('another attempt connected'))
          resolve(value)
        })
      }, (err: unknown) => {
        running.delete(ctl)
        if (done) return
        lastError = err
        if (opts.retryable(err)) { schedule(s.retryAfterMs, 'retry'); return }
        // the peer is there and said no (refused, wrong key): asking again changes nothing
        finish(() => {
          for (const c of running) c.abort(err)
          reject(err)
        })
      })
      schedule(s.freshAfterMs, 'fresh')
    }
    if (opts.signal.aborted) { reject(opts.signal.reason); return }
    opts.signal.addEventListener('abort', onAbort, { once: true })
    start('first')
  })
}
