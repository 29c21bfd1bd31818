// The serving side of the proxy tunnel protocol: another agent asks this one to connect to an
// endpoint. Only endpoints the catalog places on this node are dialled — anything else is
// refused and logged, so the mesh is never an open proxy into this node's networks.
import { createConnection, type Socket } from 'node:net'
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import type { Stream } from '@libp2p/interface'
import type { Logger } from '../../shared/logging.ts'
import type { CatalogSnapshot } from '../catalog/store.ts'
import { onStreamFinished, toBytes } from '../tunnel/stream-io.ts'
import { DatagramDecoder, decodeRequest, encodeDatagram, MAX_QUEUED_DATAGRAM_BYTES, ProxyStatus, type ProxyRequest } from './wire.ts'
import { readPrefix, spliceSocketStream } from './pipe.ts'
import type { ProxyMetrics } from './metrics.ts'

export interface RemoteServerOptions {
  nodeName: string
  snapshot: () => CatalogSnapshot
  log: Logger
  metrics: ProxyMetrics
  connectTimeoutMs: number
  /** a UDP flow with no datagram either way for this long is closed */
  udpIdleMs: number
}

/** Endpoints ('TCP|ip|port') the snapshot places on `nodeName`, cached per snapshot version. */
export class LocalEndpoints {
  private version = -1
  private set = new Set<string>()
  private readonly nodeName: string
  private readonly snapshot: () => CatalogSnapshot
  constructor (nodeName: string, snapshot: () => CatalogSnapshot) { this.nodeName = nodeName; this.snapshot = snapshot }

  has (r: ProxyRequest): boolean {
    const snap = this.snapshot()
    if (snap.version !== this.version) { this.set = localEndpointSet(snap, this.nodeName); this.version = snap.version }
    return this.set.has(`${r.protocol}|${r.ip}|${r.port}`)
  }
}

export function localEndpointSet (snap: CatalogSnapshot, nodeName: string): Set<string> {
  const out = new Set<string>()
  for (const slices of snap.endpoints.values()) {
    for (const slice of slices.values()) {
      for (const ep of slice.endpoints) {
        if (ep.nodeName !== nodeName) continue
        for (const ip of ep.addresses) for (const p of slice.ports) out.add(`${p.protocol}|${ip}|${p.port}`)
      }
    }
  }
  return out
}

export class RemoteServer {
  private readonly opts: RemoteServerOptions
  private readonly local: LocalEndpoints
  private readonly open = new Set<{ close: () => void }>()

  constructor (opts: RemoteServerOptions) {
    this.opts = opts
    this.local = new LocalEndpoints(opts.nodeName, opts.snapshot)
  }

  get openFlows (): number { return this.open.size }

  /** Handles one inbound PROXY_PROTOCOL stream from `peer`. Never throws. */
  serve (stream: Stream, peer: { node: string }): void {
    void this.serveAsync(stream, peer).catch((err: Error) => {
      this.opts.log.debug({ peer: peer.node, err: err.message }, 'proxy stream failed')
      stream.abort(err)
    })
  }

  private async serveAsync (stream: Stream, peer: { node: string }): Promise<void> {
    const { log, metrics } = this.opts
    let req: ProxyRequest
    let rest: Uint8Array
    try {
      const r = await readPrefix(stream, (buf) => {
        const d = decodeRequest(buf)
        return typeof d === 'string' ? d : { value: d.request, length: d.length }
      }, 5_000)
      req = r.value
      rest = r.rest
    } catch (err) {
      metrics.remote.inc({ result: 'bad-request' })
      log.warn({ peer: peer.node, reason: (err as Error).message }, 'proxy: malformed request from a peer; stream closed')
      await reply(stream, ProxyStatus.BAD_REQUEST)
      stream.abort(err as Error)
      return
    }
    if (!this.local.has(req)) {
      metrics.remote.inc({ result: 'refused' })
      log.warn({ peer: peer.node, target: `${req.ip}:${req.port}/${req.protocol}` }, 'proxy: refused a request for an endpoint the catalog does not place on this node')
      await reply(stream, ProxyStatus.REFUSED)
      await stream.close().catch(() => {})
      return
    }
    if (req.protocol === 'TCP') await this.serveTcp(stream, req, rest, peer)
    else await this.serveUdp(stream, req, rest, peer)
  }

  private async serveTcp (stream: Stream, req: ProxyRequest, rest: Uint8Array, peer: { node: string }): Promise<void> {
    const { metrics } = this.opts
    let socket: Socket
    try {
      socket = await dial(req.ip, req.port, this.opts.connectTimeoutMs)
    } catch (err) {
      metrics.remote.inc({ result: 'dial-failed' })
      this.opts.log.info({ peer: peer.node, target: `${req.ip}:${req.port}`, err: (err as Error).message }, 'proxy: endpoint dial failed')
      await reply(stream, ProxyStatus.DIAL_FAILED)
      await stream.close().catch(() => {})
      return
    }
    metrics.remote.inc({ result: 'ok' })
    await reply(stream, ProxyStatus.OK)
    const flow = { close: () => { socket.destroy() } }
    this.open.add(flow)
    try {
      const { up, down, failure } = await spliceSocketStream(socket, stream, undefined, rest)
      if (failure != null) {
        metrics.streamFailures.inc({ side: 'remote', cause: failure.cause })
        this.opts.log.info({ peer: peer.node, target: `${req.ip}:${req.port}`, cause: failure.cause, err: failure.error.message, up, down }, 'proxy: connection for a peer failed')
      }
    } finally { this.open.delete(flow) }
  }

  private async serveUdp (stream: Stream, req: ProxyRequest, rest: Uint8Array, peer: { node: string }): Promise<void> {
    const { metrics } = this.opts
    let socket: UdpSocket
    try {
      socket = await connectUdp(req.ip, req.port)
    } catch (err) {
      metrics.remote.inc({ result: 'dial-failed' })
      this.opts.log.info({ peer: peer.node, target: `${req.ip}:${req.port}/UDP`, err: (err as Error).message }, 'proxy: endpoint dial failed')
      await reply(stream, ProxyStatus.DIAL_FAILED)
      await stream.close().catch(() => {})
      return
    }
    metrics.remote.inc({ result: 'ok' })
    await reply(stream, ProxyStatus.OK)
    let last = Date.now()
    let closed = false
    const decoder = new DatagramDecoder()
    const forward = (chunk: Uint8Array): void => {
      last = Date.now()
      for (const d of decoder.push(chunk)) {
        socket.send(d)
        metrics.datagrams.inc({ direction: 'request', result: 'ok' })
      }
    }
    const onMessage = (evt: any): void => { forward(toBytes(evt.data)) }
    const close = (): void => {
      if (closed) return
      closed = true
      clearInterval(idle)
      this.open.delete(flow)
      stream.removeEventListener('message', onMessage)
      socket.close()
      stream.close().catch(() => { stream.abort(new Error('close failed')) })
    }
    const flow = { close }
    this.open.add(flow)
    const idle = setInterval(() => { if (Date.now() - last > this.opts.udpIdleMs) close() }, Math.min(1_000, this.opts.udpIdleMs))
    idle.unref()
    socket.on('message', (msg) => {
      last = Date.now()
      // a congested tunnel drops, like any UDP path: never queue without bound
      if (stream.writeStatus !== 'writable' || stream.writeBufferLength > MAX_QUEUED_DATAGRAM_BYTES) { metrics.datagrams.inc({ direction: 'reply', result: 'dropped' }); return }
      stream.send(encodeDatagram(msg))
      metrics.datagrams.inc({ direction: 'reply', result: 'ok' })
    })
    socket.on('error', () => { close() })
    stream.addEventListener('message', onMessage)
    if (rest.length > 0) forward(rest)
    if (stream.readStatus === 'paused') stream.resume()
    onStreamFinished(stream, { end: close, close })
  }

  stop (): void { for (const f of [...this.open]) f.close() }
}

async function reply (stream: Stream, status: ProxyStatus): Promise<void> {
  if (stream.writeStatus !== 'writable') return
  stream.send(Uint8Array.of(status))
}


export async function dial (host: string, port: number, timeoutMs: number): Promise<Socket> {
  return await new Promise<Socket>((resolve, reject) => {
    const socket = createConnection({ host, port, allowHalfOpen: true, noDelay: true })
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`connect ${host}:${port} timed out after ${timeoutMs} ms`)) }, timeoutMs)
    socket.once('connect', () => { clearTimeout(timer); socket.off('error', onError); socket.pause(); resolve(socket) })
    const onError = (err: Error): void => { clearTimeout(timer); reject(err) }
    socket.once('error', onError)
  })
}

/** A UDP socket connected to an endpoint, with large buffers: a tunnel delivers datagrams in bursts (one stream chunk can hold many). */
export async function connectUdp (ip: string, port: number): Promise<UdpSocket> {
  const s = createSocket({ type: ip.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject)
      s.connect(port, ip, () => { s.off('error', reject); resolve() })
    })
  } catch (err) {
    s.close()
    throw err
  }
  return s
}
