// The relay's sweep for dead TCP connections (server/connection-liveness.ts): every connection is
// pinged once per interval, spread over the ticks (never all at once), and one that does not
// answer within the timeout is aborted. Fake connections and fake timers.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { Connection } from '@libp2p/interface'
import { sliceOf, startLivenessSweep } from '../../server/connection-liveness.ts'
import { createLogger } from '../../shared/logging.ts'

beforeEach(() => { vi.useFakeTimers() })
afterEach(() => { vi.useRealTimers() })

function fakeConnection (id: string, alive: boolean): { conn: Connection, pings: number[], aborted: Error[] } {
  const pings: number[] = []
  const aborted: Error[] = []
  const c = {
    id,
    status: 'open',
    abort: (err: Error) => { aborted.push(err); c.status = 'aborted' },
    muxer: {
      ping: async ({ signal }: { signal: AbortSignal }) => {
        pings.push(Date.now())
        if (alive) return 1
        return await new Promise<number>((_resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }) })
      }
    }
  }
  return { conn: c as unknown as Connection, pings, aborted }
}

describe('sliceOf', () => {
  it('is stable per id and spreads ids evenly over the slices', () => {
    const counts = new Array(30).fill(0)
    for (let i = 0; i < 3000; i++) counts[sliceOf(`conn-${i}-${i * 7919}`, 30)]++
    expect(sliceOf('abc', 30)).toBe(sliceOf('abc', 30))
    expect(Math.max(...counts)).toBeLessThan(3 * 100)
    expect(Math.min(...counts)).toBeGreaterThan(100 / 3)
  })
})

describe('liveness sweep', () => {
  it('pings each connection once per interval, a slice per tick; aborts the one that does not answer, only it', async () => {
    const conns = Array.from({ length: 300 }, (_, i) => fakeConnection(`c${i}`, i !== 7))
    const stop = startLivenessSweep(() => conns.filter((c) => c.conn.status === 'open').map((c) => c.conn), createLogger({ name: 't', level: 'silent' }), { intervalMs: 10_000, tickMs: 1_000, timeoutMs: 5_000 })
    let most = 0
    for (let t = 0; t < 10; t++) {
      const before = conns.reduce((n, c) => n + c.pings.length, 0)
      await vi.advanceTimersByTimeAsync(1_000)
      most = Math.max(most, conns.reduce((n, c) => n + c.pings.length, 0) - before)
    }
    // every connection pinged exactly once in the first interval, never all in one tick
    expect(conns.map((c) => c.pings.length)).toEqual(conns.map(() => 1))
    expect(most).toBeLessThan(300 / 3)
    await vi.advanceTimersByTimeAsync(5_000)
    expect(conns[7]!.aborted).toHaveLength(1)
    expect(conns.filter((c) => c.aborted.length > 0)).toHaveLength(1)
    stop()
    await vi.advanceTimersByTimeAsync(30_000)
    expect(conns[0]!.pings.length).toBeLessThanOrEqual(2)
  })

  it('stop() ends the pings in flight without judging their connections, and leaves no timer behind', async () => {
    const conns = Array.from({ length: 30 }, (_, i) => fakeConnection(`c${i}`, false))
    const stop = startLivenessSweep(() => conns.map((c) => c.conn), createLogger({ name: 't', level: 'silent' }), { intervalMs: 10_000, tickMs: 1_000, timeoutMs: 5_000 })
    await vi.advanceTimersByTimeAsync(3_000)
    const pinged = conns.filter((c) => c.pings.length > 0).length
    expect(pinged).toBeGreaterThan(0)
    expect(vi.getTimerCount()).toBe(1 + pinged) // the sweep's and one per unanswered ping
    stop()
    expect(vi.getTimerCount()).toBe(0)
    await vi.advanceTimersByTimeAsync(60_000)
    expect(conns.filter((c) => c.aborted.length > 0)).toHaveLength(0)
    expect(conns.reduce((n, c) => n + c.pings.length, 0)).toBe(pinged)
  })
})
