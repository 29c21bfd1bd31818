// Unit tests for the dial's attempt schedule (agent/tunnel/dial-attempts.ts), on fake timers with
// attempts the test settles by hand.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { dialWithAttempts } from '../../agent/tunnel/dial-attempts.ts'

class Absent extends Error {}

interface Attempt { n: number, signal: AbortSignal, resolve: (v: string) => void, reject: (e: Error) => void }

function harness (): { attempts: Attempt[], run: (signal?: AbortSignal) => { settled: () => boolean, value: () => string | undefined, error: () => unknown }, whys: string[] } {
  const attempts: Attempt[] = []
  const whys: string[] = []
  const run = (signal = new AbortController().signal): { settled: () => boolean, value: () => string | undefined, error: () => unknown } => {
    let settled = false; let value: string | undefined; let error: unknown
    dialWithAttempts<string>(async (sig, n) => await new Promise<string>((resolve, reject) => {
      attempts.push({ n, signal: sig, resolve, reject })
      sig.addEventListener('abort', () => { reject(sig.reason) })
    }), { signal, retryable: (e) => e instanceof Absent, onAttempt: (_n, why) => { whys.push(why) } })
      .then((v) => { settled = true; value = v }, (e) => { settled = true; error = e })
    return { settled: () => settled, value: () => value, error: () => error }
  }
  return { attempts, run, whys }
}

beforeEach(() => { vi.useFakeTimers() })
afterEach(() => { vi.useRealTimers() })

describe('dialWithAttempts', () => {
  it('a quick attempt is the only one', async () => {
    const h = harness()
    const r = h.run()
    h.attempts[0]!.resolve('conn-1')
    await vi.advanceTimersByTimeAsync(10_000)
    expect(r.value()).toBe('conn-1')
    expect(h.attempts).toHaveLength(1)
  })

  it('a hanging attempt gets a fresh one beside it after 1 s; the first to connect wins and the others are aborted', async () => {
    const h = harness()
    const r = h.run()
    await vi.advanceTimersByTimeAsync(999)
    expect(h.attempts).toHaveLength(1)
    await vi.advanceTimersByTimeAsync(1)
    expect(h.attempts).toHaveLength(2)
    expect(h.whys).toEqual(['first', 'fresh'])
    h.attempts[1]!.resolve('conn-2')
    await vi.advanceTimersByTimeAsync(0)
    expect(r.value()).toBe('conn-2')
    expect(h.attempts[0]!.signal.aborted).toBe(true)
    expect(h.attempts[1]!.signal.aborted).toBe(false)
    await vi.advanceTimersByTimeAsync(10_000)
    expect(h.attempts).toHaveLength(2)
  })

  it('at most 6 attempts run at once', async () => {
    const h = harness()
    h.run()
    await vi.advanceTimersByTimeAsync(20_000)
    expect(h.attempts).toHaveLength(6)
  })

  it('an absent peer is asked again after 250 ms until it is back', async () => {
    const h = harness()
    const r = h.run()
    for (let i = 0; i < 5; i++) {
      h.attempts[i]!.reject(new Absent('NO_RESERVATION'))
      await vi.advanceTimersByTimeAsync(249)
      expect(h.attempts).toHaveLength(i + 1)
      await vi.advanceTimersByTimeAsync(1)
      expect(h.attempts).toHaveLength(i + 2)
    }
    expect(h.whys.slice(1)).toEqual(['retry', 'retry', 'retry', 'retry', 'retry'])
    h.attempts[5]!.resolve('back')
    await vi.advanceTimersByTimeAsync(0)
    expect(r.value()).toBe('back')
  })

  it('a refusal ends the dial at once with its error, aborting the others', async () => {
    const h = harness()
    const r = h.run()
    await vi.advanceTimersByTimeAsync(1_000)
    h.attempts[1]!.reject(new Error('refused: wrong key'))
    await vi.advanceTimersByTimeAsync(0)
    expect((r.error() as Error).message).toBe('refused: wrong key')
    expect(h.attempts[0]!.signal.aborted).toBe(true)
    await vi.advanceTimersByTimeAsync(10_000)
    expect(h.attempts).toHaveLength(2)
  })

  it('the caller\'s signal ends it with the last attempt\'s error', async () => {
    const h = harness()
    const ctl = new AbortController()
    const r = h.run(ctl.signal)
    h.attempts[0]!.reject(new Absent('peer is not registered'))
    await vi.advanceTimersByTimeAsync(300)
    ctl.abort(new Error('dial timeout'))
    await vi.advanceTimersByTimeAsync(0)
    expect((r.error() as Error).message).toBe('peer is not registered')
    expect(h.attempts[1]!.signal.aborted).toBe(true)
    await vi.advanceTimersByTimeAsync(10_000)
    expect(h.attempts).toHaveLength(2)
  })
})
