// Joins the two streams of each relayed circuit (circuit relay v2 CONNECT: the dialing agent's
// HOP stream and the relay's STOP stream to the listening agent) in place of circuit-relay-v2's
// own joining. Its createLimitedRelay (4.2.13) calls @libp2p/utils pipe(src, dst, src), and pipe
// wraps each argument in a new duplex, so src gets two: the second one's queue is handed every
// message the dialer sends and is never read. The relay kept each byte a dialing agent sent
// until the circuit closed (agents keep a circuit for as long as the tunnel lives): its RSS grew
// by ~2 bytes per relayed byte (each message pins the larger read buffer it was sliced from)
// until the pod's memory limit killed it. Its queues also ignored backpressure: a slow receiving
// agent made the relay hold whatever the dialer sent.
// Here each direction is forwarded message by message; while the receiving stream's send buffer
// is full the sending stream is paused (yamux then stops granting its peer window), so a circuit
// holds at most about one window per direction. The library still does everything else
// (reservation checks, the STOP handshake, the status answer); only its join is swapped, for
// two placeholders that it pipes into each other and that close at once.
import type { AbortOptions, PeerId, Stream } from '@libp2p/interface'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { Logger } from '../shared/logging.ts'

export class CircuitLimitError extends Error {
  constructor (message: string) { super(message); this.name = 'CircuitLimitError' }
}

/** What joinCircuit needs of a stream (a subset of libp2p's Stream, so tests can use pairs). */
export type JoinableStream = Pick<Stream, 'addEventListener' | 'removeEventListener' | 'send' | 'close' | 'abort' | 'pause' | 'resume' | 'onDrain' | 'writeStatus' | 'readStatus' | 'status' | 'readableEnded'>

export interface CircuitLimit {
  /** the circuit is aborted when this fires (relay shutdown, reservation expired) */
  signals: AbortSignal[]
  /** aborted after this many ms */
  durationMs?: number
  /** aborted once this many bytes (both directions together) have been relayed */
  dataBytes?: bigint
}

/** closed for good: both ends closed, aborted here or reset by the peer */
const gone = (s: JoinableStream): boolean => s.status === 'closed' || s.status === 'aborted' || s.status === 'reset'

/**
 * Forwards a's messages to b and b's to a until both are closed. A clean half-close is passed
 * on (close() once the sender's data is all delivered); an abort or reset of either side, a
 * limit, or a failed send aborts both.
 */
export function joinCircuit (a: JoinableStream, b: JoinableStream, limit: CircuitLimit): void {
  let remaining = limit.dataBytes
  const cleanups: Array<() => void> = []
  let done = false
  const finish = (): void => {
    if (done) return
    done = true
    for (const c of cleanups) c()
  }
  const abortBoth = (err: Error): void => {
    a.abort(err)
    b.abort(err)
    finish()
  }

  const forward = (from: JoinableStream, to: JoinableStream): void => {
    const onMessage = (evt: { data: Uint8Array | Uint8ArrayList }): void => {
      if (remaining != null) {
        remaining -= BigInt(evt.data.byteLength)
        if (remaining < 0n) { abortBoth(new CircuitLimitError(`data limit of ${limit.dataBytes} bytes exceeded`)); return }
      }
      try {
        if (to.send(evt.data) || from.readStatus !== 'readable') return
        // the receiving side's buffer is full: read no more until it drains
        from.pause()
        to.onDrain().then(() => { if (from.readStatus === 'paused') from.resume() }, abortBoth)
      } catch (err: any) {
        abortBoth(err instanceof Error ? err : new Error(String(err)))
      }
    }
    // all of from's data delivered and its writer done: pass the half-close on
    const onEnd = (): void => {
      if (from.status !== 'aborted' && from.status !== 'reset' && to.writeStatus === 'writable') to.close().catch(abortBoth)
    }
    const onClose = (evt: Event & { error?: Error }): void => {
      if (evt.error != null) abortBoth(evt.error)
      else if (gone(a) && gone(b)) finish()
    }
    from.addEventListener('message', onMessage)
    from.addEventListener('end', onEnd)
    from.addEventListener('close', onClose as any)
    cleanups.push(() => {
      from.removeEventListener('message', onMessage)
      from.removeEventListener('end', onEnd)
      from.removeEventListener('close', onClose as any)
    })
  }
  forward(a, b)
  forward(b, a)
  // a side whose peer half-closed before the join (nothing left to read) will not emit 'end' again
  if (a.readableEnded && b.writeStatus === 'writable') b.close().catch(abortBoth)
  if (b.readableEnded && a.writeStatus === 'writable') a.close().catch(abortBoth)

  for (const s of limit.signals) {
    if (s.aborted) { abortBoth(s.reason instanceof Error ? s.reason : new CircuitLimitError('circuit closed')); return }
    const onAbort = (): void => { abortBoth(s.reason instanceof Error ? s.reason : new CircuitLimitError('circuit closed')) }
    s.addEventListener('abort', onAbort, { once: true })
    cleanups.push(() => { s.removeEventListener('abort', onAbort) })
  }
  if (limit.durationMs != null) {
    const timer = setTimeout(() => { abortBoth(new CircuitLimitError(`duration limit of ${limit.durationMs} ms exceeded`)) }, limit.durationMs)
    timer.unref()
    cleanups.push(() => { clearTimeout(timer) })
  }
  // either side may already be gone (closed while the handshake ran)
  if (gone(a) || gone(b)) abortBoth(new CircuitLimitError('circuit stream closed before the join'))
}

/** A stream-shaped stand-in that the library's join pipes into; finish() ends that pipe. */
class Placeholder extends EventTarget {
  readonly writeStatus = 'closed'
  readonly readStatus = 'closed'
  readonly status = 'closed'
  send (): boolean { return true }
  async close (): Promise<void> {}
  abort (): void {}
  finish (): void { this.dispatchEvent(new Event('close')) }
}

interface Reservation { limit?: { duration?: number, data?: bigint }, signal?: AbortSignal }
interface PbStreamLike { pb: (...args: any[]) => unknown, unwrap: () => Stream }
interface RelayServerInternals {
  handleConnect: (args: { stream: PbStreamLike, request: unknown, connection: unknown }, options?: AbortOptions) => Promise<void>
  stopHop: (args: unknown, options?: AbortOptions) => Promise<Stream | undefined>
  reservationStore: { get: (peer: PeerId) => Reservation | undefined }
  shutdownController: AbortController
}

/**
 * Makes circuitRelayServer's CONNECT handling join its circuits with joinCircuit. It reaches
 * into the service's internals (handleConnect, stopHop, reservationStore, shutdownController:
 * the dependency is pinned exactly) and throws at start-up when they are not there.
 */
export function joinCircuitsWithBackpressure (service: unknown, log: Logger): void {
  const s = service as RelayServerInternals
  if (typeof s?.handleConnect !== 'function' || typeof s.stopHop !== 'function' || typeof s.reservationStore?.get !== 'function' || s.shutdownController == null) {
    throw new Error('circuit-relay-v2 internals changed (handleConnect/stopHop/reservationStore/shutdownController): see server/circuit-join.ts')
  }
  const handleConnect = s.handleConnect
  s.handleConnect = async function (args, options) {
    let dst: Stream | undefined
    let reservation: Reservation | undefined
    let srcTaken = false
    const placeholders: Placeholder[] = []
    const placeholder = (): Placeholder => { const p = new Placeholder(); placeholders.push(p); return p }
    // the library's own handler, seeing our stopHop/reservation lookup/unwrap through this view
    const view = Object.create(s) as RelayServerInternals
    view.stopHop = async (a, o) => { dst = await s.stopHop(a, o); return dst != null ? placeholder() as unknown as Stream : undefined }
    view.reservationStore = { get: (peer) => (reservation = s.reservationStore.get(peer)) }
    const stream: PbStreamLike = { pb: (...a) => args.stream.pb(...a), unwrap: () => { srcTaken = true; return placeholder() as unknown as Stream } }
    try {
      await handleConnect.call(view, { ...args, stream }, options)
    } catch (err: any) {
      dst?.abort(err instanceof Error ? err : new Error(String(err)))
      throw err
    } finally {
      for (const p of placeholders) p.finish()
    }
    if (dst == null) return
    if (!srcTaken || reservation == null) { dst.abort(new Error('circuit not established')); return }
    const src = args.stream.unwrap()
    const signals = [s.shutdownController.signal, ...(reservation.signal != null ? [reservation.signal] : [])]
    joinCircuit(src, dst, { signals, durationMs: reservation.limit?.duration, dataBytes: reservation.limit?.data })
    log.debug({}, 'circuit joined')
  }
}
