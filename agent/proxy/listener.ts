// The agent's side of a service port whose traffic the kernel hands to the agent (its tunnel
// endpoints, or all endpoints when the policy needs to see each connection): one TCP server or
// UDP socket on the proxy address, an ephemeral port the rules DNAT to. Each connection or flow
// gets an endpoint from the Balancer; a dial that fails moves on to the next endpoint.
import { createServer, type Server, type Socket } from 'node:net'
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram'
import type { Stream } from '@libp2p/interface'
import type { Logger } from '../../shared/logging.ts'
import type { TunnelApi } from '../tunnel/tunnel.ts'
import { onStreamFinished, toBytes } from '../tunnel/stream-io.ts'
import { Balancer, type PickContext } from './lb.ts'
import { agentEndpoints, type ServicePortPlan } from './plan.ts'
import { readPrefix, spliceSocketStream, spliceSockets } from './pipe.ts'
import { connectUdp, dial } from './remote.ts'
import { DatagramDecoder, encodeDatagram, encodeRequest, MAX_DATAGRAM, MAX_QUEUED_DATAGRAM_BYTES, PROXY_PROTOCOL, ProxyStatus, statusName, type ProxyRequest } from './wire.ts'
import type { ProxyMetrics } from './metrics.ts'

export interface ListenerDeps {
  tunnel: TunnelApi
  log: Logger
  metrics: ProxyMetrics
  connectTimeoutMs: number
  /** idle timeout of a UDP flow that has not (yet) exchanged more than one datagram each way: DNS-like */
  udpIdleMs: number
  /** idle timeout once a flow has gone back and forth (a stream: VoIP, QUIC, WireGuard) */
  udpStreamIdleMs: number
}

/** How long an endpoint whose dial failed is skipped by new connections (unless nothing else is left). */
const EJECT_MS = 5_000
/** Most endpoints tried for one connection before it is reset. */
const MAX_ATTEMPTS = 4
/** Datagrams held per UDP flow while its tunnel stream opens. */
const MAX_PENDING_DATAGRAMS = 256
const HTTP_HEAD_LIMIT = 16 * 1024
const HTTP_HEAD_WAIT_MS = 1_000

const clientIpOf = (addr: string | undefined): string => (addr ?? '').replace(/^::ffff:/, '')
const splitEndpoint = (ep: string): { ip: string, port: number } => {
  const i = ep.lastIndexOf(':')
  return { ip: ep.slice(0, i), port: Number(ep.slice(i + 1)) }
}

export class ServicePortListener {
  plan: ServicePortPlan
  /** 'ip:port' the rules DNAT to */
  address = ''
  private endpoints: string[] = []
  private readonly balancer = new Balancer()
  private readonly deps: ListenerDeps
  private server: Server | undefined
  private udp: UdpSocket | undefined
  private readonly sockets = new Set<Socket>()
  private readonly flows = new Map<string, UdpFlow>()
  private sweepTimer: NodeJS.Timeout | undefined
  private closed = false
  /** endpoint -> ms until which it is skipped after a failed dial (passive health, like Envoy's outlier ejection) */
  private readonly ejected = new Map<string, number>()

  private constructor (plan: ServicePortPlan, deps: ListenerDeps) {
    this.plan = plan
    this.deps = deps
    this.update(plan)
  }

  static async open (plan: ServicePortPlan, listenIp: string, deps: ListenerDeps): Promise<ServicePortListener> {
    const l = new ServicePortListener(plan, deps)
    if (plan.protocol === 'TCP') await l.listenTcp(listenIp)
    else await l.listenUdp(listenIp)
    return l
  }

  /** New endpoints or policy from the catalog; connections already open keep their endpoint. */
  update (plan: ServicePortPlan): void {
    this.plan = plan
    this.endpoints = agentEndpoints(plan)
    this.balancer.configure({ policy: plan.policy, sessionAffinity: plan.affinitySeconds > 0 ? 'ClientIP' : 'None', affinityTimeoutSeconds: plan.affinitySeconds })
  }

  get connections (): number { return this.sockets.size + this.flows.size }

  /** Picks an endpoint avoiding this connection's failed ones and, while others remain, recently failed ones. */
  private pick (ctx: PickContext, tried: Set<string>): string | undefined {
    if (this.ejected.size > 0) {
      const now = Date.now()
      const avoid = new Set(tried)
      for (const [ep, until] of this.ejected) { if (until <= now) this.ejected.delete(ep); else avoid.add(ep) }
      const ep = this.balancer.pick(this.endpoints, ctx, avoid) ?? this.pickFallback(avoid)
      if (ep != null) return ep
    }
    return this.balancer.pick(this.endpoints, ctx, tried) ?? this.pickFallback(tried)
  }

  /**
   * When every endpoint the agent serves failed (a peer refused one it no longer has: its catalog
   * saw a removal before ours), the service's directly reachable endpoints, which the kernel
   * rules normally serve, are dialled by the agent instead of failing the connection.
   */
  private pickFallback (tried: Set<string>): string | undefined {
    if (this.plan.agentOnly) return undefined
    const rest = this.plan.direct.filter((ep) => !tried.has(ep))
    return rest.length === 0 ? undefined : rest[Math.floor(Math.random() * rest.length)]
  }

  private failed (ep: string): void { this.ejected.set(ep, Date.now() + EJECT_MS) }

  /**
   * The rules no longer point here. Connections and flows the kernel already sent here (its
   * conntrack entries keep them coming) finish undisturbed; after `graceMs` no new connection is
   * accepted, and once the last one ends the listener closes. close() cuts this short.
   */
  async retire (graceMs: number): Promise<void> {
    if (this.closed) return
    const started = Date.now()
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (this.closed) { clearInterval(timer); resolve(); return }
        if (Date.now() - started < graceMs) return
        if (this.server?.listening === true) this.server.close()
        if (this.connections === 0) { clearInterval(timer); resolve() }
      }, Math.min(1_000, graceMs))
      timer.unref()
    })
    await this.close()
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.sweepTimer)
    for (const s of this.sockets) s.destroy()
    for (const f of this.flows.values()) f.close()
    if (this.server?.listening === true) await new Promise<void>((resolve) => { this.server!.close(() => { resolve() }) })
    this.udp?.close()
  }

  // ---- TCP ----

  private async listenTcp (ip: string): Promise<void> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => { this.onConnection(socket) })
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: ip, port: 0, backlog: 4096 }, () => { server.off('error', reject); resolve() })
    })
    server.on('error', (err) => { this.deps.log.warn({ service: this.plan.id, err: err.message }, 'proxy listener error') })
    const a = server.address() as { port: number }
    this.address = `${ip}:${a.port}`
  }

  private onConnection (socket: Socket): void {
    this.sockets.add(socket)
    socket.once('close', () => { this.sockets.delete(socket) })
    socket.on('error', () => { /* handled where the socket is spliced; reset by the client */ })
    void this.forwardTcp(socket).catch((err: Error) => {
      this.deps.log.debug({ service: this.plan.id, err: err.message }, 'proxy connection failed')
      socket.destroy()
    })
  }

  private async forwardTcp (socket: Socket): Promise<void> {
    const { metrics } = this.deps
    const ctx: PickContext = { clientIp: clientIpOf(socket.remoteAddress) }
    let head: Uint8Array | undefined
    const policy = this.plan.policy
    if (policy.kind === 'consistent-hash' && 'header' in policy.on) {
      head = await readHttpHead(socket)
      const headers = parseHttpHeaders(head)
      ctx.header = (name) => headers.get(name.toLowerCase())
    }
    const exclude = new Set<string>()
    for (let attempt = 0; attempt < MAX_ATTEMPTS && !this.closed; attempt++) {
      const ep = this.pick(ctx, exclude)
      if (ep == null) break
      const node = this.plan.remote.get(ep)
      const path = node == null ? 'local' : 'tunnel'
      const { ip, port } = splitEndpoint(ep)
      let upstream: { socket?: Socket, stream?: Stream, rest?: Uint8Array }
      try {
        upstream = node == null ? { socket: await dial(ip, port, this.deps.connectTimeoutMs) } : await this.openTunnel(node, 'TCP', ip, port)
      } catch (err) {
        exclude.add(ep)
        this.failed(ep)
        metrics.connections.inc({ protocol: 'TCP', path, result: 'failed' })
        this.deps.log.info({ service: this.plan.id, endpoint: ep, node, err: (err as Error).message }, 'proxy: endpoint failed; trying the next')
        continue
      }
      if (socket.destroyed) { upstream.socket?.destroy(); upstream.stream?.abort(new Error('client gone')); return }
      metrics.connections.inc({ protocol: 'TCP', path, result: 'ok' })
      this.balancer.begin(ep)
      try {
        if (upstream.socket != null) await spliceSockets(socket, upstream.socket, head)
        else {
          const { up, down, failure } = await spliceSocketStream(socket, upstream.stream!, head, upstream.rest)
          if (failure != null) {
            metrics.streamFailures.inc({ side: 'local', cause: failure.cause })
            this.deps.log.info({ service: this.plan.id, endpoint: ep, node, cause: failure.cause, err: failure.error.message, up, down }, 'proxy: connection over the tunnel failed')
          }
        }
      } finally { this.balancer.end(ep) }
      return
    }
    socket.resetAndDestroy()
  }

  private async openTunnel (node: string, protocol: 'TCP' | 'UDP', ip: string, port: number): Promise<{ stream: Stream, rest: Uint8Array }> {
    return await openProxyStream(this.deps.tunnel, node, { protocol, ip, port }, this.deps.connectTimeoutMs)
  }

  // ---- UDP ----

  private async listenUdp (ip: string): Promise<void> {
    const udp = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
    this.udp = udp
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject)
      udp.bind({ address: ip, port: 0 }, () => { udp.off('error', reject); resolve() })
    })
    udp.on('error', (err) => { this.deps.log.warn({ service: this.plan.id, err: err.message }, 'proxy UDP listener error') })
    udp.on('message', (msg, rinfo) => { this.onDatagram(msg, rinfo) })
    this.address = `${ip}:${udp.address().port}`
    this.sweepTimer = setInterval(() => { this.sweep() }, 1_000)
    this.sweepTimer.unref()
  }

  private onDatagram (msg: Buffer, rinfo: RemoteInfo): void {
    const key = `${rinfo.address}:${rinfo.port}`
    let flow = this.flows.get(key)
    if (flow == null) {
      flow = new UdpFlow(this, rinfo)
      this.flows.set(key, flow)
      void this.openFlow(flow)
    }
    flow.fromClient(msg)
  }

  private async openFlow (flow: UdpFlow): Promise<void> {
    const { metrics } = this.deps
    const exclude = new Set<string>()
    for (let attempt = 0; attempt < MAX_ATTEMPTS && !this.closed && !flow.closed; attempt++) {
      const ep = this.pick({ clientIp: flow.client.address }, exclude)
      if (ep == null) break
      const node = this.plan.remote.get(ep)
      const path = node == null ? 'local' : 'tunnel'
      const { ip, port } = splitEndpoint(ep)
      try {
        if (node == null) flow.attachSocket(await connectUdp(ip, port))
        else { const t = await this.openTunnel(node, 'UDP', ip, port); flow.attachStream(t.stream, t.rest) }
        metrics.connections.inc({ protocol: 'UDP', path, result: 'ok' })
        this.balancer.begin(ep)
        flow.onClose = () => { this.balancer.end(ep) }
        return
      } catch (err) {
        exclude.add(ep)
        this.failed(ep)
        metrics.connections.inc({ protocol: 'UDP', path, result: 'failed' })
        this.deps.log.info({ service: this.plan.id, endpoint: ep, node, err: (err as Error).message }, 'proxy: UDP endpoint failed; trying the next')
      }
    }
    flow.close()
  }

  /** @internal a reply for a client */
  replyTo (client: RemoteInfo, payload: Uint8Array): void {
    this.udp?.send(payload, client.port, client.address)
  }

  /** @internal */
  forget (flow: UdpFlow): void {
    const key = `${flow.client.address}:${flow.client.port}`
    if (this.flows.get(key) === flow) this.flows.delete(key)
  }

  /** @internal */
  countDatagram (direction: 'request' | 'reply', result: 'ok' | 'dropped'): void {
    this.deps.metrics.datagrams.inc({ direction, result })
  }

  private sweep (): void {
    const now = Date.now()
    for (const f of this.flows.values()) {
      const limit = f.isStream ? this.deps.udpStreamIdleMs : this.deps.udpIdleMs
      if (now - f.lastActivity > limit) f.close()
    }
  }
}

/** One client address:port of a UDP service port, and its way to the endpoint. */
class UdpFlow {
  readonly client: RemoteInfo
  closed = false
  lastActivity = Date.now()
  onClose: (() => void) | undefined
  private sent = 0
  private replies = 0
  private pending: Uint8Array[] | undefined = []
  private stream: Stream | undefined
  private socket: UdpSocket | undefined
  private readonly listener: ServicePortListener

  constructor (listener: ServicePortListener, client: RemoteInfo) {
    this.listener = listener
    this.client = client
  }

  /** Seen both ways more than once: a conversation, not a lookup (conntrack's "assured"). */
  get isStream (): boolean { return this.sent > 1 && this.replies > 1 }

  fromClient (msg: Uint8Array): void {
    this.lastActivity = Date.now()
    this.sent++
    if (this.pending != null) {
      if (this.pending.length < MAX_PENDING_DATAGRAMS) this.pending.push(msg)
      else this.listener.countDatagram('request', 'dropped')
      return
    }
    this.send(msg)
  }

  private send (msg: Uint8Array): void {
    if (this.socket != null) { this.socket.send(msg); this.listener.countDatagram('request', 'ok'); return }
    const s = this.stream
    if (s == null || s.writeStatus !== 'writable' || s.writeBufferLength > MAX_QUEUED_DATAGRAM_BYTES || msg.length > MAX_DATAGRAM) { this.listener.countDatagram('request', 'dropped'); return }
    s.send(encodeDatagram(msg))
    this.listener.countDatagram('request', 'ok')
  }

  private fromEndpoint (payload: Uint8Array): void {
    this.lastActivity = Date.now()
    this.replies++
    this.listener.replyTo(this.client, payload)
    this.listener.countDatagram('reply', 'ok')
  }

  attachSocket (socket: UdpSocket): void {
    if (this.closed) { socket.close(); return }
    this.socket = socket
    socket.on('message', (m) => { this.fromEndpoint(m) })
    socket.on('error', () => { this.close() })
    this.flush()
  }

  attachStream (stream: Stream, rest: Uint8Array): void {
    if (this.closed) { stream.abort(new Error('flow closed')); return }
    this.stream = stream
    const decoder = new DatagramDecoder()
    const onChunk = (chunk: Uint8Array): void => { for (const d of decoder.push(chunk)) this.fromEndpoint(d) }
    stream.addEventListener('message', (evt: any) => { onChunk(toBytes(evt.data)) })
    if (rest.length > 0) onChunk(rest)
    if (stream.readStatus === 'paused') stream.resume()
    onStreamFinished(stream, { end: () => { this.close() }, close: () => { this.close() } })
    this.flush()
  }

  private flush (): void {
    const p = this.pending
    this.pending = undefined
    for (const m of p ?? []) this.send(m)
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    for (const _ of this.pending ?? []) this.listener.countDatagram('request', 'dropped')
    this.pending = undefined
    this.socket?.close()
    if (this.stream != null && this.stream.status === 'open') this.stream.close().catch(() => { this.stream?.abort(new Error('close failed')) })
    this.listener.forget(this)
    this.onClose?.()
  }
}

/** The request head of an HTTP/1 connection (for consistent hashing on a header), bounded in size and wait. */
async function readHttpHead (socket: Socket): Promise<Uint8Array> {
  const parts: Buffer[] = []
  let size = 0
  return await new Promise<Uint8Array>((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('end', done)
      socket.pause()
      resolve(Buffer.concat(parts))
    }
    const onData = (b: Buffer): void => {
      parts.push(b); size += b.length
      if (size >= HTTP_HEAD_LIMIT || Buffer.concat(parts).includes('\r\n\r\n')) done()
    }
    const timer = setTimeout(done, HTTP_HEAD_WAIT_MS)
    socket.on('data', onData)
    socket.once('end', done)
    socket.resume()
  })
}

export function parseHttpHeaders (head: Uint8Array): Map<string, string> {
  const out = new Map<string, string>()
  const text = Buffer.from(head).toString('latin1')
  const end = text.indexOf('\r\n\r\n')
  const lines = (end >= 0 ? text.slice(0, end) : text).split('\r\n').slice(1)
  for (const line of lines) {
    const i = line.indexOf(':')
    if (i <= 0) continue
    const name = line.slice(0, i).trim().toLowerCase()
    if (!out.has(name)) out.set(name, line.slice(i + 1).trim())
  }
  return out
}

export class ProxyRefusedError extends Error {
  readonly status: number
  constructor (node: string, status: number) { super(`${node} answered ${statusName(status)}`); this.status = status }
}

/** Opens a proxy stream to `node` for an endpoint and waits for its OK (ProxyRefusedError otherwise). */
export async function openProxyStream (tunnel: TunnelApi, node: string, req: ProxyRequest, timeoutMs: number): Promise<{ stream: Stream, rest: Uint8Array }> {
  // the request rides with the protocol proposal (optimistic select): one round trip to the OK
  const stream = await tunnel.openStream(node, PROXY_PROTOCOL, { signal: AbortSignal.timeout(timeoutMs), firstData: encodeRequest(req) })
  try {
    const { value: status, rest } = await readPrefix(stream, (b) => ({ value: b[0]!, length: 1 }), timeoutMs)
    if (status !== ProxyStatus.OK) throw new ProxyRefusedError(node, status)
    return { stream, rest }
  } catch (err) {
    stream.abort(err as Error)
    throw err
  }
}
