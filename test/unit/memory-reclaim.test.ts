import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { nextFloor, shouldReclaim, startMemoryReclaim } from '../../agent/memory-reclaim.ts'

const MiB = 2 ** 20

describe('memory reclaim', () => {
  beforeEach(() => { vi.useFakeTimers() })
  afterEach(() => { vi.useRealTimers() })

  it('decides: only above floor + growth, and only after the cooldown', () => {
    expect(shouldReclaim(110 * MiB, 100 * MiB, 16 * MiB, Infinity, 5000)).toBe(false)
    expect(shouldReclaim(117 * MiB, 100 * MiB, 16 * MiB, Infinity, 5000)).toBe(true)
    expect(shouldReclaim(117 * MiB, 100 * MiB, 16 * MiB, 4999, 5000)).toBe(false)
    expect(shouldReclaim(117 * MiB, 100 * MiB, 16 * MiB, 5000, 5000)).toBe(true)
  })

  it('runs one GC when the RSS grew, none while it stays near the floor, and backs off while GCs do not help', () => {
    let rss = 100 * MiB
    const t0 = Date.now() // fake: advances with the timers
    const gcs: number[] = []
    let afterGc = (): number => rss
    // busy throughout (one core's worth of CPU): no GC is taken for a grown baseline here
    const r = startMemoryReclaim({ intervalMs: 5000, maxCooldownMs: 20_000, rss: () => rss, cpuMs: () => Date.now() - t0, gc: () => { gcs.push(Date.now() - t0); rss = afterGc() } })
    const advance = (ms: number): void => { vi.advanceTimersByTime(ms) }
    advance(60_000)
    expect(gcs).toEqual([]) // idle: nothing to do
    // traffic: the RSS grows and a GC cannot bring it down (live data)
    rss = 300 * MiB
    advance(60_000)
    // GCs at 65 s, then cooldowns of 10 s, 20 s, 20 s: 65, 75, 95, 115 s
    expect(gcs).toEqual([65_000, 75_000, 95_000, 115_000])
    // traffic over: the next GC gives the memory back, after which nothing more runs
    afterGc = () => 105 * MiB
    advance(60_000)
    expect(gcs.length).toBe(5)
    expect(gcs[4]).toBe(135_000)
    expect(r.state()).toEqual({ floorBytes: 100 * MiB, gcs: 5 })
    r.stop()
    rss = 500 * MiB
    advance(60_000)
    expect(gcs.length).toBe(5) // stopped: no more timer
  })

  it('takes a GC that does not help on an idle agent as a new baseline: no GC every cooldown for live memory', () => {
    expect(nextFloor(100 * MiB, 130 * MiB, 8 * MiB, true)).toBe(130 * MiB)
    expect(nextFloor(100 * MiB, 130 * MiB, 8 * MiB, false)).toBe(100 * MiB)
    expect(nextFloor(100 * MiB, 104 * MiB, 8 * MiB, true)).toBe(100 * MiB)
    expect(nextFloor(100 * MiB, 95 * MiB, 8 * MiB, false)).toBe(95 * MiB)
    let rss = 100 * MiB
    let cpu = 0
    const t0 = Date.now()
    const gcs: number[] = []
    const r = startMemoryReclaim({ intervalMs: 5000, maxCooldownMs: 20_000, rss: () => rss, cpuMs: () => cpu, gc: () => { gcs.push(Date.now() - t0) } })
    vi.advanceTimersByTime(10_000)
    rss = 140 * MiB // the catalog grew; the agent is idle (no CPU used) and the GC frees nothing
    vi.advanceTimersByTime(600_000)
    expect(gcs).toEqual([15_000])
    expect(r.state()).toEqual({ floorBytes: 140 * MiB, gcs: 1 })
    // traffic on top of the new baseline: busy, GCs back off as before
    rss = 300 * MiB
    const busy = setInterval(() => { cpu += 1000 }, 1000)
    vi.advanceTimersByTime(30_000)
    expect(gcs.length).toBeGreaterThanOrEqual(3)
    expect(r.state().floorBytes).toBe(140 * MiB)
    clearInterval(busy)
    r.stop()
  })

  it('is a no-op without an exposed gc', () => {
    const r = startMemoryReclaim({ rss: () => 1e12 })
    expect(vi.getTimerCount()).toBe((globalThis as { gc?: unknown }).gc != null ? 1 : 0)
    r.stop()
    expect(vi.getTimerCount()).toBe(0)
  })
})
