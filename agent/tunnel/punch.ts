// UDP hole punching from the agent's one socket: both sides send small punch datagrams to
// every candidate of the other every 25 ms; the first punch or ack that arrives tells us
// which address actually works (it may be a peer-reflexive one the relay never saw).
import type { UdxSocket } from '../../shared/udx.ts'
import type { Endpoint } from '../../shared/wire/addr.ts'
import { encodeMessage } from '../../shared/wire/rendezvous.ts'

export interface PunchResult { remote: Endpoint, ms: number, sent: number }

type Waiter = (from: Endpoint, ack: boolean) => void

/** Routes received punch datagrams to the attempt that expects their session. */
export class PunchRegistry {
  private readonly waiters = new Map<bigint, Waiter>()
  private readonly socket: UdxSocket

  constructor (socket: UdxSocket) { this.socket = socket }

  /** @returns false when no attempt expects this session (the caller counts a drop) */
  onPunch (session: bigint, ack: boolean, from: Endpoint): boolean {
    const w = this.waiters.get(session)
    if (w == null) return false
    w(from, ack)
    return true
  }

  async punch (session: bigint, candidates: Endpoint[], opts: { timeoutMs: number, intervalMs?: number, signal?: AbortSignal }): Promise<PunchResult | null> {
    if (opts.signal?.aborted === true) return null
    const t0 = performance.now()
    const interval = opts.intervalMs ?? 25
    const punchMsg = encodeMessage({ type: 'punch', session, ack: false })
    const ackMsg = encodeMessage({ type: 'punch', session, ack: true })
    return await new Promise((resolve) => {
      let sent = 0
      let done = false
      const tick = (): void => {
        for (const c of candidates) { this.socket.trySend(punchMsg, c.port, c.host); sent++ }
      }
      const finish = (r: PunchResult | null): void => {
        if (done) return
        done = true
        clearInterval(iv); clearTimeout(to)
        opts.signal?.removeEventListener('abort', onAbort)
        if (r == null) {
          this.waiters.delete(session)
        } else {
          // the peer may still be punching until our ack reaches it: keep answering a while
          const lateAck: Waiter = (from, ack) => { if (!ack) this.socket.trySend(ackMsg, from.port, from.host) }
          this.waiters.set(session, lateAck)
          setTimeout(() => { if (this.waiters.get(session) === lateAck) this.waiters.delete(session) }, 5_000).unref()
        }
        resolve(r)
      }
      const onAbort = (): void => { finish(null) }
      this.waiters.set(session, (from, ack) => {
        // answer so the other side learns the path is open too (a few times: UDP may drop one)
        if (!ack) for (let i = 0; i < 3; i++) this.socket.trySend(ackMsg, from.port, from.host)
        finish({ remote: { host: from.host, port: from.port }, ms: performance.now() - t0, sent })
      })
      const iv = setInterval(tick, interval)
      const to = setTimeout(() => { finish(null) }, opts.timeoutMs)
      opts.signal?.addEventListener('abort', onAbort)
      tick()
    })
  }
}
