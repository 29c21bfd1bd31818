// Unit tests for PunchRegistry (agent/tunnel/punch.ts), driven by fake timers and a fake
// socket that records every trySend.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { PunchRegistry, type PunchResult } from '../../agent/tunnel/punch.ts'
import { decodeMessage, type PunchMessage } from '../../shared/wire/rendezvous.ts'
import type { UdxSocket } from '../../shared/udx.ts'
import type { Endpoint } from '../../shared/wire/addr.ts'

interface Sent { msg: PunchMessage, port: number, host: string }

class FakeSocket {
  sent: Sent[] = []
  trySend (buf: Uint8Array, port: number, host: string): void {
    this.sent.push({ msg: decodeMessage(buf).message as PunchMessage, port, host })
  }

  take (): Sent[] { const s = this.sent; this.sent = []; return s }
}

const SESSION = 0x1122334455667788n
const CANDIDATES: Endpoint[] = [
  { host: '10.0.0.2', port: 4003 },
  { host: '203.0.113.9', port: 40001 },
  { host: '2001:db8:0:0:0:0:0:9', port: 4003 }
]
const punchTo = (e: Endpoint, session = SESSION): Sent => ({ msg: { type: 'punch', session, ack: false }, port: e.port, host: e.host })
const ackTo = (e: Endpoint, session = SESSION): Sent => ({ msg: { type: 'punch', session, ack: true }, port: e.port, host: e.host })

let sock: FakeSocket
let reg: PunchRegistry

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance', 'Date'] })
  sock = new FakeSocket()
  reg = new PunchRegistry(sock as unknown as UdxSocket)
})
afterEach(() => { vi.useRealTimers() })

/** Tracks a promise's settlement without awaiting it (fake timers drive progress). */
function track<T> (p: Promise<T>): { settled: () => boolean, value: () => T } {
  let done = false; let v: T
  p.then((x) => { done = true; v = x }, () => { done = true })
  return { settled: () => done, value: () => v }
}

describe('PunchRegistry.punch', () => {
  it('sends a punch to every candidate immediately and again every interval', async () => {
    const p = track(reg.punch(SESSION, CANDIDATES, { timeoutMs: 1000, intervalMs: 25 }))
    expect(sock.take()).toEqual(CANDIDATES.map((c) => punchTo(c)))
    await vi.advanceTimersByTimeAsync(24)
    expect(sock.take()).toEqual([])
    await vi.advanceTimersByTimeAsync(1)
    expect(sock.take()).toEqual(CANDIDATES.map((c) => punchTo(c)))
    await vi.advanceTimersByTimeAsync(100)
    expect(sock.take()).toEqual([0, 1, 2, 3].flatMap(() => CANDIDATES.map((c) => punchTo(c))))
    expect(p.settled()).toBe(false)
    reg.onPunch(SESSION, true, CANDIDATES[0]!)
    await vi.advanceTimersByTimeAsync(0)
    expect(p.settled()).toBe(true)
  })

  it('the default interval is 25 ms', async () => {
    void reg.punch(SESSION, CANDIDATES.slice(0, 1), { timeoutMs: 1000 })
    expect(sock.take()).toHaveLength(1)
    await vi.advanceTimersByTimeAsync(250)
    expect(sock.take()).toHaveLength(10)
    reg.onPunch(SESSION, true, CANDIDATES[0]!)
  })

  it('a punch (not an ack) from the peer resolves with the sender and is answered with 3 acks', async () => {
    const promise = reg.punch(SESSION, CANDIDATES, { timeoutMs: 3000, intervalMs: 25 })
    await vi.advanceTimersByTimeAsync(60) // 3 rounds: t=0, 25, 50
    sock.take()
    // a peer-reflexive address the relay never saw
    const from = { host: '198.51.100.77', port: 61000 }
    expect(reg.onPunch(SESSION, false, from)).toBe(true)
    const r = await promise
    expect(r).toEqual<PunchResult>({ remote: from, ms: 60, sent: 9 })
    expect(sock.take()).toEqual([ackTo(from), ackTo(from), ackTo(from)])
    // punching stops after success
    await vi.advanceTimersByTimeAsync(200)
    expect(sock.take()).toEqual([])
  })

  it('an ack from the peer resolves without sending any ack back', async () => {
    const promise = reg.punch(SESSION, CANDIDATES, { timeoutMs: 3000, intervalMs: 25 })
    sock.take()
    await vi.advanceTimersByTimeAsync(10)
    expect(reg.onPunch(SESSION, true, CANDIDATES[1]!)).toBe(true)
    const r = await promise
    expect(r).toEqual({ remote: CANDIDATES[1], ms: 10, sent: 3 })
    expect(sock.take()).toEqual([])
  })

  it('the result endpoint is a copy (extra fields of the sender are dropped)', async () => {
    const promise = reg.punch(SESSION, CANDIDATES, { timeoutMs: 3000 })
    const from = { host: '10.0.0.2', port: 4003, family: 4 }
    reg.onPunch(SESSION, true, from)
    const r = await promise
    expect(r!.remote).toStrictEqual({ host: '10.0.0.2', port: 4003 })
    expect(r!.remote).not.toBe(from)
  })

  it('onPunch for an unknown session returns false and sends nothing', () => {
    expect(reg.onPunch(SESSION, false, CANDIDATES[0]!)).toBe(false)
    void reg.punch(SESSION, CANDIDATES, { timeoutMs: 3000 })
    sock.take()
    expect(reg.onPunch(SESSION + 1n, false, CANDIDATES[0]!)).toBe(false)
    expect(reg.onPunch(0n, true, CANDIDATES[0]!)).toBe(false)
    expect(sock.take()).toEqual([])
    reg.onPunch(SESSION, true, CANDIDATES[0]!)
  })

  it('times out with null, stops punching and removes the waiter', async () => {
    const p = track(reg.punch(SESSION, CANDIDATES, { timeoutMs: 100, intervalMs: 25 }))
    await vi.advanceTimersByTimeAsync(99)
    expect(p.settled()).toBe(false)
    await vi.advanceTimersByTimeAsync(1)
    expect(p.settled()).toBe(true)
    expect(p.value()).toBeNull()
    expect(sock.take()).toHaveLength(4 * CANDIDATES.length) // t = 0, 25, 50, 75
    await vi.advanceTimersByTimeAsync(500)
    expect(sock.take()).toEqual([])
    expect(reg.onPunch(SESSION, false, CANDIDATES[0]!)).toBe(false)
    expect(sock.take()).toEqual([])
    expect(vi.getTimerCount()).toBe(0)
  })

  it('an abort signal ends the attempt with null and removes the waiter', async () => {
    const ac = new AbortController()
    const p = track(reg.punch(SESSION, CANDIDATES, { timeoutMs: 10_000, intervalMs: 25, signal: ac.signal }))
    await vi.advanceTimersByTimeAsync(30)
    ac.abort()
    await vi.advanceTimersByTimeAsync(0)
    expect(p.settled()).toBe(true)
    expect(p.value()).toBeNull()
    sock.take()
    await vi.advanceTimersByTimeAsync(100)
    expect(sock.take()).toEqual([])
    expect(reg.onPunch(SESSION, false, CANDIDATES[0]!)).toBe(false)
    expect(vi.getTimerCount()).toBe(0)
  })

  // BUG: punch() only listens for the 'abort' event; a signal that is already aborted when
  // punch() is called never fires it, so the attempt keeps punching until timeoutMs.
  it('an already-aborted signal resolves null at once', async () => {
    const p = track(reg.punch(SESSION, CANDIDATES, { timeoutMs: 3000, intervalMs: 25, signal: AbortSignal.abort() }))
    await vi.advanceTimersByTimeAsync(0)
    expect(p.settled()).toBe(true)
    expect(p.value()).toBeNull()
  })

  it('a signal aborted after success changes nothing', async () => {
    const ac = new AbortController()
    const promise = reg.punch(SESSION, CANDIDATES, { timeoutMs: 3000, signal: ac.signal })
    reg.onPunch(SESSION, true, CANDIDATES[2]!)
    ac.abort()
    expect(await promise).toEqual({ remote: CANDIDATES[2], ms: 0, sent: 3 })
  })

  it('with no candidates it sends nothing and times out', async () => {
    const p = track(reg.punch(SESSION, [], { timeoutMs: 50 }))
    await vi.advanceTimersByTimeAsync(50)
    expect(p.value()).toBeNull()
    expect(sock.take()).toEqual([])
  })

  it('after success, late punches are acked (once each) for about 5 s, and acks are ignored', async () => {
    const promise = reg.punch(SESSION, CANDIDATES, { timeoutMs: 3000, intervalMs: 25 })
    reg.onPunch(SESSION, false, CANDIDATES[0]!)
    await promise
    sock.take()

    const other = { host: '198.51.100.5', port: 5555 }
    expect(reg.onPunch(SESSION, false, CANDIDATES[0]!)).toBe(true)
    expect(reg.onPunch(SESSION, false, other)).toBe(true)
    expect(reg.onPunch(SESSION, true, other)).toBe(true)
    expect(sock.take()).toEqual([ackTo(CANDIDATES[0]!), ackTo(other)])

    await vi.advanceTimersByTimeAsync(4_999)
    expect(reg.onPunch(SESSION, false, other)).toBe(true)
    expect(sock.take()).toEqual([ackTo(other)])

    await vi.advanceTimersByTimeAsync(1)
    expect(reg.onPunch(SESSION, false, other)).toBe(false)
    expect(sock.take()).toEqual([])
  })

  it('a new attempt for the same session within 5 s is not cut short by the old late-ack timer', async () => {
    const first = reg.punch(SESSION, CANDIDATES, { timeoutMs: 3000 })
    reg.onPunch(SESSION, true, CANDIDATES[0]!)
    await first
    await vi.advanceTimersByTimeAsync(4_000)
    const second = track(reg.punch(SESSION, CANDIDATES, { timeoutMs: 3000, intervalMs: 25 }))
    await vi.advanceTimersByTimeAsync(1_500) // the first attempt's 5 s late-ack window ends
    expect(second.settled()).toBe(false)
    sock.take()
    expect(reg.onPunch(SESSION, false, CANDIDATES[1]!)).toBe(true)
    await vi.advanceTimersByTimeAsync(0)
    expect(second.value()).toEqual({ remote: CANDIDATES[1], ms: 1_500, sent: 61 * CANDIDATES.length })
    expect(sock.take()).toEqual([ackTo(CANDIDATES[1]!), ackTo(CANDIDATES[1]!), ackTo(CANDIDATES[1]!)])
  })

  it('concurrent attempts for different sessions are routed independently', async () => {
    const s2 = 99n
    const a = track(reg.punch(SESSION, CANDIDATES.slice(0, 1), { timeoutMs: 1000 }))
    const b = track(reg.punch(s2, CANDIDATES.slice(1, 2), { timeoutMs: 1000 }))
    expect(sock.take()).toEqual([punchTo(CANDIDATES[0]!), punchTo(CANDIDATES[1]!, s2)])
    expect(reg.onPunch(s2, false, CANDIDATES[1]!)).toBe(true)
    await vi.advanceTimersByTimeAsync(0)
    expect(b.value()).toEqual({ remote: CANDIDATES[1], ms: 0, sent: 1 })
    expect(a.settled()).toBe(false)
    expect(sock.take()).toEqual([ackTo(CANDIDATES[1]!, s2), ackTo(CANDIDATES[1]!, s2), ackTo(CANDIDATES[1]!, s2)])
    await vi.advanceTimersByTimeAsync(1000)
    expect(a.value()).toBeNull()
  })
})
