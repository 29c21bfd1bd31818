// Yamux stream pairs over an in-process connection, for tests of what runs on tunnel streams
// (the proxy's splice, SOCKS5): the mesh's real muxer configuration without sockets or noise.
import { yamux } from '@chainsafe/libp2p-yamux'
import { defaultLogger } from '@libp2p/logger'
import { AbstractMultiaddrConnection } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import type { Stream, StreamMuxer } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { readPrefix } from '../../agent/proxy/pipe.ts'
import { meshYamuxOptions } from '../../shared/yamux.ts'

/** Delivers what one side sends on the next turn, coalesced (as the UDX connection does). */
class CoalescingConnection extends AbstractMultiaddrConnection {
  peer!: CoalescingConnection
  private pending: Uint8Array[] = []
  private scheduled = false
  private closeAfterFlush = false

  private deliver (): void {
    this.scheduled = false
    const p = this.pending
    this.pending = []
    if (p.length > 0 && this.readStatus !== 'closed' && this.readStatus !== 'closing') this.onData(new Uint8ArrayList(...p))
    if (this.closeAfterFlush) { this.closeAfterFlush = false; this.onRemoteCloseWrite() }
  }

  receive (bufs: Uint8Array[], close = false): void {
    this.pending.push(...bufs)
    this.closeAfterFlush ||= close
    if (!this.scheduled) { this.scheduled = true; setImmediate(() => { this.deliver() }) }
  }

  sendData (data: Uint8ArrayList): { sentBytes: number, canSendMore: boolean } {
    this.peer.receive([...data].map((b) => b.slice()))
    return { sentBytes: data.byteLength, canSendMore: true }
  }

  async sendClose (): Promise<void> { this.peer.receive([], true) }
  sendReset (): void { setImmediate(() => { this.peer.onRemoteReset() }) }
  sendPause (): void {}
  sendResume (): void {}
}

/** Makes yamux stream pairs and aborts every muxer it made on abortAll(). */
export class YamuxPairs {
  private readonly muxers: StreamMuxer[] = []

  /** A connected [outbound, inbound] pair with the mesh's configuration (or `options`, e.g. the library's defaults). */
  async pair (options: object = meshYamuxOptions): Promise<[Stream, Stream]> {
    const log = defaultLogger().forComponent('test:yamux-pair')
    const addr = multiaddr('/ip4/127.0.0.1/tcp/1')
    const a = new CoalescingConnection({ remoteAddr: addr, direction: 'outbound', log, inactivityTimeout: 0 })
    const b = new CoalescingConnection({ remoteAddr: addr, direction: 'inbound', log, inactivityTimeout: 0 })
    a.peer = b; b.peer = a
    const factory = (yamux(options) as any)({ logger: defaultLogger() })
    const ma = factory.createStreamMuxer(a)
    const mb = factory.createStreamMuxer(b)
    this.muxers.push(ma, mb)
    const inbound = new Promise<Stream>((resolve) => { mb.addEventListener('stream', (e: any) => { resolve(e.detail) }, { once: true }) })
    const outbound = await ma.createStream()
    outbound.send(Uint8Array.of(0)) // yamux announces a stream with its first frame
    const remote = await inbound
    await readPrefix(remote, (buf) => ({ value: buf[0], length: 1 }), 1_000)
    return [outbound, remote]
  }

  abortAll (): void {
    for (const m of this.muxers.splice(0)) m.abort(new Error('test over'))
  }
}
