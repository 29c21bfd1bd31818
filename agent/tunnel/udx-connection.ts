// A UDX stream presented as a libp2p MultiaddrConnection, so the libp2p upgrader can run the
// connection protector (pnet), noise and yamux over it like over any TCP socket.
//
// udx-native calls JavaScript once per UDP packet (~1.4 KB). Handing every packet to libp2p
// costs an event dispatch plus noise/yamux bookkeeping each, so packets that arrive within one
// event-loop turn are coalesced and delivered as one chunk from setImmediate: the check phase
// runs right after the poll phase that read them, so no latency is added.
import { AbstractMultiaddrConnection } from '@libp2p/utils'
import type { AbortOptions, Logger, MessageStreamDirection } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { Uint8ArrayList } from 'uint8arraylist'
import type { SinkUdxStream } from '../../shared/udx.ts'

/** Deliver at least this often within one turn so a flood cannot grow a batch unbounded. */
const MAX_BATCH_BYTES = 256 * 1024

export interface UdxConnectionInit {
  stream: SinkUdxStream
  remoteAddr: Multiaddr
  direction: MessageStreamDirection
  log: Logger
}

export class UdxConnection extends AbstractMultiaddrConnection {
  readonly udxStream: SinkUdxStream
  private pending: Buffer[] = []
  private pendingBytes = 0
  private flushScheduled = false
  private readonly flushBound = (): void => { this.flush() }

  constructor (init: UdxConnectionInit) {
    // libp2p's inactivity timeout would close idle tunnels; liveness comes from UDX keepalives
    super({ ...init, inactivityTimeout: 0 })
    const s = init.stream
    this.udxStream = s
    s.sink = (packet) => { this.onPacket(packet) }
    s.on('end', () => {
      this.flush()
      this.onRemoteCloseWrite()
    })
    s.on('error', (err: Error) => {
      this.flush()
      this.abort(err)
    })
    s.on('close', () => {
      this.flush()
      this.onTransportClosed()
    })
    s.on('drain', () => { this.onUdxDrain() })
  }

  // libp2p's send() appends to this connection's write buffer whatever it answers; noise and
  // yamux above stop writing until 'drain'. Announcing 'drain' as soon as UDX took one batch let
  // every stream write again while the buffer still held the rest, so it grew by a chunk per
  // stream per batch until it held every stream's whole yamux window (tens of MiB, seconds of
  // queue: a new stream's header and the other direction's window updates waited behind it).
  // So the buffer goes to UDX first, and the writers above hear 'drain' only once it is empty.
  private onUdxDrain (): void {
    this.writableNeedsDrain = false
    this.processSendQueue()
    if (!this.writableNeedsDrain && this.writeBuffer.byteLength === 0) this.safeDispatchEvent('drain')
  }

  private onPacket (packet: Buffer): void {
    this.pending.push(packet)
    this.pendingBytes += packet.byteLength
    if (this.pendingBytes >= MAX_BATCH_BYTES) { this.flush(); return }
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(this.flushBound)
    }
  }

  private flush (): void {
    this.flushScheduled = false
    if (this.pendingBytes === 0) return
    // a list, not a concatenation: no copy, no extra 64 KB allocation per batch
    const data = this.pending.length === 1 ? this.pending[0]! : new Uint8ArrayList(...this.pending)
    this.pending = []
    this.pendingBytes = 0
    if (this.readStatus === 'closed' || this.readStatus === 'closing') return
    this.onData(data)
  }

  sendData (data: Parameters<AbstractMultiaddrConnection['sendData']>[0]): { sentBytes: number, canSendMore: boolean } {
    let sentBytes = 0
    let canSendMore = true
    for (const buf of data) {
      sentBytes += buf.byteLength
      canSendMore = this.udxStream.write(buf)
      if (!canSendMore) break
    }
    return { sentBytes, canSendMore }
  }

  async sendClose (options?: AbortOptions): Promise<void> {
    const s = this.udxStream
    if (s.destroyed) return
    await new Promise<void>((resolve) => {
      const done = (): void => { options?.signal?.removeEventListener('abort', onAbort); resolve() }
      const onAbort = (): void => { s.destroy(); done() }
      s.once('close', done)
      options?.signal?.addEventListener('abort', onAbort)
      s.end()
    })
  }

  sendReset (): void { this.udxStream.destroy() }
  sendPause (): void { this.udxStream.pause() }
  sendResume (): void { this.udxStream.resume() }
}
