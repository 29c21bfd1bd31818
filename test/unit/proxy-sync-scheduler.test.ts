// The proxy's sync schedule on a virtual clock: leading edge after a quiet period, a burst for
// a Service and its EndpointSlice, coalescing, the steady-state bound under churn, retries.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { SyncPacer, SyncScheduler, type Timers } from '../../agent/proxy/sync-scheduler.ts'

/** Timers on a virtual clock: advance() fires them in time order, letting promises settle after each. */
class VirtualClock implements Timers {
  t = 0
  private seq = 0
  private readonly pending = new Map<number, { at: number, fn: () => void }>()
  now = (): number => this.t
  setTimeout = (fn: () => void, ms: number): unknown => { const id = ++this.seq; this.pending.set(id, { at: this.t + Math.max(0, ms), fn }); return id }
  clearTimeout = (h: unknown): void => { this.pending.delete(h as number) }
  async settle (): Promise<void> { for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve)) }
  async advance (to: number): Promise<void> {
    await this.settle()
    for (;;) {
      let next: [number, { at: number, fn: () => void }] | undefined
      for (const e of this.pending) if (e[1].at <= to && (next == null || e[1].at < next[1].at || (e[1].at === next[1].at && e[0] < next[0]))) next = e
      if (next == null) break
      this.pending.delete(next[0])
      this.t = next[1].at
      next[1].fn()
      await this.settle()
    }
    this.t = to
  }
}

/** A scheduler whose syncs take `duration(i)` virtual ms; records start/end times. */
function harness (opts: { minIntervalMs: number, burst: number, duration?: (i: number) => number, fail?: (i: number) => boolean }): { clock: VirtualClock, s: SyncScheduler, starts: number[], ends: number[], running: () => number, maxRunning: () => number } {
  const clock = new VirtualClock()
  const starts: number[] = []
  const ends: number[] = []
  let running = 0
  let maxRunning = 0
  const s = new SyncScheduler({
    minIntervalMs: opts.minIntervalMs,
    burst: opts.burst,
    timers: clock,
    retryDelayMs: (n) => 500 * 2 ** Math.min(n, 6),
    run: async () => {
      const i = starts.length
      starts.push(clock.t)
      running++
      maxRunning = Math.max(maxRunning, running)
      await new Promise<void>((resolve) => { clock.setTimeout(resolve, opts.duration?.(i) ?? 20) })
      running--
      ends.push(clock.t)
      if (opts.fail?.(i) === true) throw new Error('restore failed')
    }
  })
  return { clock, s, starts, ends, running: () => running, maxRunning: () => maxRunning }
}

describe('SyncPacer', () => {
  it('lets a burst through at once after a quiet period, then one per interval', () => {
    const p = new SyncPacer({ minIntervalMs: 250, burst: 2 }, 0)
    expect(p.delay(0)).toBe(0); p.started(0)
    expect(p.delay(10)).toBe(0); p.started(10)
    expect(p.delay(20)).toBe(230) // the first token comes back 250 ms after the bucket was full
    expect(p.delay(250)).toBe(0); p.started(250)
    expect(p.delay(300)).toBe(200)
    expect(p.delay(10_000)).toBe(0) // quiet again: full
    p.started(10_000); p.started(10_000)
    expect(p.delay(10_000)).toBe(250)
  })

  it('never waits with no interval, and refuses a burst below 1', () => {
    const p = new SyncPacer({ minIntervalMs: 0, burst: 1 }, 0)
    for (let i = 0; i < 10; i++) { expect(p.delay(0)).toBe(0); p.started(0) }
    expect(() => new SyncPacer({ minIntervalMs: 250, burst: 0 }, 0)).toThrow(/burst/)
  })
})

describe('SyncScheduler', () => {
  it('starts the first sync after a quiet period at once (leading edge)', async () => {
    const h = harness({ minIntervalMs: 250, burst: 3 })
    await h.clock.advance(5_000)
    h.s.request()
    expect(h.starts).toEqual([5_000])
  })

  it('a Service and its EndpointSlice 10 ms later: the second sync starts when the first ends, not an interval later', async () => {
    const h = harness({ minIntervalMs: 250, burst: 3, duration: () => 40 })
    await h.clock.advance(1_000)
    h.s.request() // the Service: REJECT rules
    await h.clock.advance(1_010)
    h.s.request() // its EndpointSlice, while the first sync runs
    await h.clock.advance(2_000)
    expect(h.starts).toEqual([1_000, 1_040])
  })

  it('changes arriving while a sync runs or waits share the next one', async () => {
    const h = harness({ minIntervalMs: 250, burst: 1, duration: () => 30 })
    h.s.request()
    for (let t = 1; t < 200; t += 7) { await h.clock.advance(t); h.s.request() }
    await h.clock.advance(5_000)
    expect(h.starts).toEqual([0, 250]) // the second waited for its token, and carried all 28 changes
  })

  it('under sustained churn: one sync per interval after the burst, and the last change is synced', async () => {
    const h = harness({ minIntervalMs: 250, burst: 3, duration: () => 20 })
    for (let t = 0; t <= 5_000; t += 10) { await h.clock.advance(t); h.s.request() }
    await h.clock.advance(10_000)
    expect(h.starts.length).toBeLessThanOrEqual(3 + 5_000 / 250 + 1)
    expect(h.starts.length).toBeGreaterThanOrEqual(5_000 / 250)
    expect(h.starts.at(-1)).toBeGreaterThanOrEqual(5_000)
    const gaps = h.starts.slice(4).map((t, i) => t - h.starts[i + 3]!)
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(249)
  })

  it('retries a failed sync after the backoff, and a success resets it', async () => {
    const h = harness({ minIntervalMs: 250, burst: 3, fail: (i) => i < 2 })
    h.s.request()
    await h.clock.advance(10_000)
    expect(h.starts).toEqual([0, 20 + 1_000, 1_040 + 2_000])
    expect(h.s.failures).toBe(0)
  })

  it('runNow runs at once whatever the pacing, after the running sync; stop() waits for it and starts nothing more', async () => {
    const h = harness({ minIntervalMs: 250, burst: 1, duration: () => 50 })
    h.s.request()
    const now = h.s.runNow()
    await h.clock.advance(50)
    await h.clock.advance(100)
    await now
    expect(h.starts).toEqual([0, 50])
    h.s.request()
    const stopped = h.s.stop()
    await h.clock.advance(10_000)
    await stopped
    h.s.request()
    await h.clock.advance(20_000)
    expect(h.starts).toEqual([0, 50])
  })

  it('a start is not a millisecond late from floating-point rounding of the refill (model test counterexample)', async () => {
    // 146 ms of refill at 225 ms per token leaves 79 ms to wait, which the float sum made 79.00000000000001 -> 80
    const h = harness({ minIntervalMs: 225, burst: 1, duration: (i) => [1, 1, 1, 275, 146, 1][i % 6]! })
    let t = 0
    for (const g of [0, 30, 121, 168, 356, 2, 302]) { t += g; await h.clock.advance(t); h.s.request() }
    await h.clock.advance(2_000)
    expect(h.starts).toEqual([0, 225, 450, 675, 950, 1175])
  })

  it('model: never two syncs at once, every change followed by a sync that started after it, starts within the token bucket bound, a quiet change syncs at once', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.integer({ min: 0, max: 400 }), { minLength: 1, maxLength: 40 }),
      fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 40 }),
      fc.integer({ min: 0, max: 300 }), fc.integer({ min: 1, max: 4 }),
      async (gaps, durations, interval, burst) => {
        const h = harness({ minIntervalMs: interval, burst, duration: (i) => durations[i % durations.length]! })
        const requests: number[] = []
        const immediate: boolean[] = []
        let t = 0
        for (const g of gaps) {
          t += g
          await h.clock.advance(t)
          const quiet = h.running() === 0 && (h.starts.length === 0 || t - h.starts.at(-1)! >= burst * interval) && h.ends.length === h.starts.length
          const before = h.starts.length
          h.s.request()
          requests.push(t)
          if (quiet) immediate.push(h.starts.length === before + 1 && h.starts.at(-1) === t)
        }
        await h.clock.advance(t + 100_000)
        expect(h.maxRunning()).toBe(1)
        for (const r of requests) expect(h.starts.some((s) => s >= r)).toBe(true)
        expect(immediate.every(Boolean)).toBe(true)
        if (interval > 0) {
          for (let i = 0; i < h.starts.length; i++) {
            for (let j = i; j < h.starts.length; j++) {
              // starts in [starts[i], starts[j]]: at most burst + elapsed / interval
              expect(j - i + 1).toBeLessThanOrEqual(burst + (h.starts[j]! - h.starts[i]!) / interval)
            }
          }
        }
      }), { numRuns: 150 })
  })
})
