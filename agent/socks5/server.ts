// The agent's SOCKS5 server: one handshake state machine per connection (no shared request
// object), a handshake deadline, then the target by name: a node (its agent over the tunnel, or
// this node itself) or a Service (a ready endpoint, dialled like the ClusterIP proxy does). The
// reply is sent only once the far side answered: success when the connection exists, else the
// RFC 1928 code that says why. Every refusal is counted and logged with its reason.
import { createServer, isIP, type Server, type Socket } from 'node:net'
import type { Stream } from '@libp2p/interface'
import type { Logger } from '../../shared/logging.ts'
import { LogThrottle } from '../../shared/log-throttle.ts'
import type { CatalogSnapshot } from '../catalog/store.ts'
import { serviceKey } from '../catalog/store.ts'
import type { TunnelApi } from '../tunnel/tunnel.ts'
import { readPrefix, spliceSocketStream, spliceSockets } from '../proxy/pipe.ts'
import { parseCidr, planService, type ServicePortPlan } from '../proxy/plan.ts'
import { dial } from '../proxy/remote.ts'
import { openProxyStream, ProxyRefusedError } from '../proxy/listener.ts'
import { ServerHandshake } from './handshake.ts'
import type { Socks5Metrics } from './metrics.ts'
import { dialOwnNode, statusOfDialError, type OwnNode } from './node-server.ts'
import { encodeNodeRequest, NodeStatus, nodeStatusName, SOCKS5_NODE_PROTOCOL } from './node-wire.ts'
import { resolveTarget, type Target } from './targets.ts'
import { encodeReply, Reply, type Request } from './wire.ts'

/** Where a node name leads: this node, a node with an agent in the peer directory, a node the cluster has but no agent serves. */
export type NodeKind = 'self' | 'peer' | 'no-agent'

export interface Socks5ServerOptions {
  listen: Array<{ host: string, port: number }>
  own: OwnNode
  clusterDomain: string
  nodeSuffix: string
  services: boolean
  handshakeTimeoutMs: number
  connectTimeoutMs: number
  maxConnections: number
  verify?: (username: Uint8Array, password: Uint8Array) => boolean
  tunnel: TunnelApi
  /** what a name is; may ask the API (a node with no agent), so it may answer later */
  nodeKind: (name: string) => NodeKind | undefined | Promise<NodeKind | undefined>
  snapshot?: () => CatalogSnapshot
  directCidrs: readonly string[]
  log: Logger
  metrics: Socks5Metrics
}

type TargetKind = 'node' | 'service' | 'none'

/** A refusal with the reply that says it. */
class Refusal extends Error {
  readonly reason: string
  readonly reply: number
  constructor (reason: string, reply: number, detail: string) { super(detail); this.reason = reason; this.reply = reply }
}

/** Endpoints tried for one Service connection before giving up (as the proxy's listener). */
const MAX_ENDPOINT_ATTEMPTS = 4
/** A refused connection's socket is destroyed this long after our FIN if the client keeps it open. */
const LINGER_MS = 2_000

export class Socks5Server {
  private readonly opts: Socks5ServerOptions
  private readonly servers: Server[] = []
  private readonly sockets = new Set<Socket>()
  private readonly allowed: Set<number>
  private readonly throttle = new LogThrottle(10_000)
  private readonly cidrs: ReturnType<typeof parseCidr>[]
  private next = 0
  private stopped = false

  private constructor (opts: Socks5ServerOptions) {
    this.opts = opts
    this.allowed = new Set(opts.own.allowedPorts)
    this.cidrs = opts.directCidrs.map(parseCidr)
  }

  static async start (opts: Socks5ServerOptions): Promise<Socks5Server> {
    const s = new Socks5Server(opts)
    try {
      for (const l of opts.listen) await s.listenOn(l.host, l.port)
    } catch (err) {
      await s.stop()
      throw err
    }
    return s
  }

  /** host:port of each listener (the port chosen when 0 was asked for) */
  get addresses (): string[] {
    return this.servers.map((srv) => { const a = srv.address() as { address: string, port: number }; return `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` })
  }

  get connections (): number { return this.sockets.size }

  private async listenOn (host: string, port: number): Promise<void> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => { this.onConnection(socket) })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => { reject(new Error(`socks5.listen: cannot listen on ${host}:${port}: ${err.message}`)) })
      server.listen({ host, port, backlog: 1024 }, () => { server.removeAllListeners('error'); resolve() })
    })
    server.on('error', (err) => { this.opts.log.warn({ err: err.message }, 'socks5 listener error') })
    this.servers.push(server)
  }

  private onConnection (socket: Socket): void {
    const { metrics } = this.opts
    if (this.stopped) { socket.destroy(); return }
    const client = `${(socket.remoteAddress ?? '').replace(/^::ffff:/, '')}:${socket.remotePort ?? 0}`
    // the cap counts connections still in their handshake too: any pod on the node can reach the
    // listener, and half-greeted sockets held to the handshake deadline must not exhaust the
    // agent's file descriptors (which its tunnel, proxy and DNS share). No reply is possible
    // before a request, so the connection is closed at once.
    if (this.sockets.size >= this.opts.maxConnections) {
      socket.on('error', () => {})
      this.refuse(socket, client, 'none', new Refusal('too-many-connections', -1, `socks5.maxConnections (${this.opts.maxConnections}) connections open, handshakes included`), undefined, false)
      socket.destroy()
      return
    }
    this.sockets.add(socket)
    metrics.open.inc()
    socket.once('close', () => { this.sockets.delete(socket); metrics.open.dec() })
    socket.on('error', () => { /* a reset client: the close handler cleans up */ })
    const handshake = new ServerHandshake(this.opts.verify != null ? { verify: this.opts.verify } : {})
    const timer = setTimeout(() => {
      finish()
      this.refuse(socket, client, 'none', new Refusal('handshake-timeout', -1, `no complete SOCKS5 handshake within ${this.opts.handshakeTimeoutMs} ms (stopped at ${handshake.at})`), undefined)
    }, this.opts.handshakeTimeoutMs)
    const finish = (): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('end', onEnd)
      socket.pause()
    }
    const onEnd = (): void => { finish(); socket.destroy() } // the client gave up mid-handshake
    const onData = (chunk: Buffer): void => {
      const step = handshake.push(chunk)
      for (const w of step.write) socket.write(w)
      if (step.state === 'more') return
      finish()
      if (step.state === 'refused') {
        // the machine already wrote its reply (if any): `reply` is for the log line only
        this.refuse(socket, client, 'none', new Refusal(step.reason, step.reply ?? -1, step.detail), step.target, false)
        return
      }
      void this.connect(socket, client, step.request, step.rest, step.username).catch((err: Error) => {
        this.opts.log.warn({ client, err: err.message }, 'socks5: connection failed')
        socket.destroy()
      })
    }
    socket.on('data', onData)
    socket.once('end', onEnd)
    socket.once('close', () => { clearTimeout(timer) }) // reset mid-handshake: not a timeout
    socket.resume()
  }

  private async connect (socket: Socket, client: string, req: Request, head: Uint8Array, username: string | undefined): Promise<void> {
    const { metrics } = this.opts
    const target = `${req.host}:${req.port}`
    const { resolved, kinds } = await this.resolve(req)
    if (socket.destroyed) return // the client left while we asked the API about the name
    const kind: TargetKind = resolved.kind === 'refused' ? 'none' : resolved.kind
    if (resolved.kind === 'refused') {
      this.refuse(socket, client, kind, new Refusal(resolved.reason, resolved.reason === 'unknown-target' ? Reply.HOST_UNREACHABLE : Reply.ADDRESS_TYPE_NOT_SUPPORTED, resolved.detail), target)
      return
    }
    // the connect deadline (reason: a TimeoutError) and the client hanging up while we wait both
    // abort the attempt; one controller per connection, its timer cleared when the attempt ends
    const attempt = new AbortController()
    const onGone = (): void => { attempt.abort(new Error('client closed')) }
    socket.once('close', onGone)
    const deadline = setTimeout(() => { attempt.abort(Object.assign(new Error(`connect deadline of ${this.opts.connectTimeoutMs} ms`), { name: 'TimeoutError' })) }, this.opts.connectTimeoutMs)
    const signal = attempt.signal
    let upstream: { socket: Socket } | { stream: Stream, rest: Uint8Array }
    let via: string
    try {
      const r = resolved.kind === 'node' ? await this.connectNode(resolved, kinds.get(resolved.node), signal) : await this.connectService(resolved, signal)
      upstream = r.upstream
      via = r.via
    } catch (err) {
      if (signal.aborted && !timedOut(signal)) return // the client is gone
      const refusal = err instanceof Refusal ? err : timedOut(signal) ? new Refusal('connect-timeout', Reply.TTL_EXPIRED, `no connection within socks5.connectTimeoutMs (${this.opts.connectTimeoutMs} ms): ${(err as Error).message}`) : new Refusal('general-failure', Reply.GENERAL_FAILURE, (err as Error).message)
      this.refuse(socket, client, kind, refusal, target)
      return
    } finally {
      clearTimeout(deadline)
      socket.off('close', onGone)
    }
    if (socket.destroyed || this.stopped) {
      if ('socket' in upstream) upstream.socket.destroy(); else upstream.stream.abort(new Error('client gone'))
      return
    }
    socket.write(encodeReply(Reply.SUCCEEDED))
    metrics.connections.inc({ target: kind, result: 'ok' })
    this.opts.log.debug({ client, target, via, user: username }, 'socks5: connected')
    if ('socket' in upstream) {
      await spliceSockets(socket, upstream.socket, head) // pipe() carries an 'end' emitted before it too
      return
    }
    // a paused socket still emits 'end' once its buffer is empty: a client that sent its FIN
    // right behind the request (`nc < /dev/null`) has ended before the splice listens for it
    const endedEarly = socket.readableEnded
    const spliced = spliceSocketStream(socket, upstream.stream, head, upstream.rest)
    if (endedEarly) socket.emit('end')
    const { up, down, failure } = await spliced
    if (failure != null) {
      metrics.streamFailures.inc({ side: 'local', cause: failure.cause })
      this.opts.log.info({ client, target, via, cause: failure.cause, err: failure.error.message, up, down }, 'socks5: connection over the tunnel failed')
    }
  }

  /** The target, after asking what each name it could be a node by is (resolveTarget is pure and synchronous). */
  private async resolve (req: Request): Promise<{ resolved: Target, kinds: Map<string, NodeKind | undefined> }> {
    const snap = this.opts.snapshot
    const kinds = new Map<string, NodeKind | undefined>()
    const name = req.host.toLowerCase().replace(/\.$/, '')
    const candidates = [name]
    if (this.opts.nodeSuffix !== '' && name.endsWith(`.${this.opts.nodeSuffix}`)) candidates.push(name.slice(0, -this.opts.nodeSuffix.length - 1))
    for (const c of candidates) {
      if (c === '' || isIP(c) !== 0 || kinds.has(c)) continue
      try {
        kinds.set(c, await this.opts.nodeKind(c))
      } catch (err) {
        // the API could not say whether such a Node exists: the name is not known to be one
        this.opts.log.debug({ name: c, err: (err as Error).message }, 'socks5: node lookup failed')
        kinds.set(c, undefined)
      }
    }
    const resolved = resolveTarget(req.host, req.port, {
      nodeSuffix: this.opts.nodeSuffix,
      clusterDomain: this.opts.clusterDomain,
      services: this.opts.services && snap != null,
      isNode: (n) => kinds.get(n) != null,
      isService: (namespace, n) => snap?.().services.has(serviceKey(namespace, n)) === true
    })
    return { resolved, kinds }
  }

  // ---- node targets

  private async connectNode (t: Extract<Target, { kind: 'node' }>, nodeKind: NodeKind | undefined, signal: AbortSignal): Promise<{ upstream: { socket: Socket } | { stream: Stream, rest: Uint8Array }, via: string }> {
    // the target agent decides; this check only makes the common refusal fast and clear
    if (!this.allowed.has(t.port)) throw new Refusal('port-not-allowed', Reply.NOT_ALLOWED, `port ${t.port} is not in socks5.allowedPorts [${[...this.allowed].join(', ')}]`)
    if (nodeKind === 'self') {
      try {
        return { upstream: { socket: await dialOwnNode(this.opts.own, t.port) }, via: 'local' }
      } catch (err) {
        throw refusalOfNodeStatus(statusOfDialError(err as Error), t.node, (err as Error).message)
      }
    }
    if (nodeKind === 'no-agent') throw new Refusal('node-unreachable', Reply.NETWORK_UNREACHABLE, `node ${t.node} has no edgemesh agent in the peer directory`)
    let stream: Stream
    try {
      // the request rides with the protocol proposal: one tunnel round trip to the node's answer
      stream = await this.opts.tunnel.openStream(t.node, SOCKS5_NODE_PROTOCOL, { signal, firstData: encodeNodeRequest({ node: t.node, port: t.port }) })
    } catch (err) {
      // no tunnel within the deadline: the node is offline (its record not yet expired, so the
      // dial could not fail fast), not a slow target
      if (timedOut(signal)) throw new Refusal('node-unreachable', Reply.NETWORK_UNREACHABLE, `no tunnel to node ${t.node} within socks5.connectTimeoutMs (${this.opts.connectTimeoutMs} ms): it is offline or unreachable`)
      if (signal.aborted) throw err
      const e = err as Error
      if (e.name === 'UnsupportedProtocolError') throw new Refusal('node-not-serving', Reply.NOT_ALLOWED, `node ${t.node} does not serve SOCKS5 connections (its socks5 section is off, or acceptFromPeers is false)`)
      throw new Refusal('node-unreachable', Reply.NETWORK_UNREACHABLE, `node ${t.node} cannot be reached over the tunnel: ${e.message}`)
    }
    try {
      const left = Math.max(1, this.opts.connectTimeoutMs)
      const { value: status, rest } = await abortable(readPrefix(stream, (b) => ({ value: b[0]!, length: 1 }), left), signal)
      if (status !== NodeStatus.OK) throw refusalOfNodeStatus(status as NodeStatus, t.node, `node ${t.node} answered ${nodeStatusName(status)}`)
      return { upstream: { stream, rest }, via: 'tunnel' }
    } catch (err) {
      stream.abort(err as Error)
      if (err instanceof Refusal || signal.aborted) throw err
      throw new Refusal('general-failure', Reply.GENERAL_FAILURE, `node ${t.node}: ${(err as Error).message}`)
    }
  }

  // ---- Service targets

  private async connectService (t: Extract<Target, { kind: 'service' }>, signal: AbortSignal): Promise<{ upstream: { socket: Socket } | { stream: Stream, rest: Uint8Array }, via: string }> {
    const plan = this.planFor(t)
    const endpoints = [...plan.direct, ...plan.remote.keys()]
    if (endpoints.length === 0) throw new Refusal('no-endpoint', Reply.HOST_UNREACHABLE, `Service ${t.namespace}/${t.name} port ${t.port} has no ready endpoint`)
    const start = this.next++ % endpoints.length
    let last: Refusal | undefined
    for (let i = 0; i < Math.min(MAX_ENDPOINT_ATTEMPTS, endpoints.length) && !signal.aborted; i++) {
      const ep = endpoints[(start + i) % endpoints.length]!
      const node = plan.remote.get(ep)
      const at = ep.lastIndexOf(':')
      const ip = ep.slice(0, at)
      const port = Number(ep.slice(at + 1))
      try {
        if (node == null) return { upstream: { socket: await abortable(dial(ip, port, this.opts.connectTimeoutMs), signal) }, via: ep }
        return { upstream: await abortable(openProxyStream(this.opts.tunnel, node, { protocol: 'TCP', ip, port }, this.opts.connectTimeoutMs), signal), via: `${node}/${ep}` }
      } catch (err) {
        if (signal.aborted) throw err
        last = err instanceof ProxyRefusedError
          ? new Refusal('no-endpoint', Reply.HOST_UNREACHABLE, `endpoint ${ep} on ${node}: ${err.message}`)
          : refusalOfNodeStatus(statusOfDialError(err as Error), node ?? 'this node', `endpoint ${ep}${node != null ? ` on ${node}` : ''}: ${(err as Error).message}`)
        this.opts.log.info({ service: `${t.namespace}/${t.name}`, endpoint: ep, node, err: (err as Error).message }, 'socks5: endpoint failed; trying the next')
      }
    }
    throw last ?? new Refusal('no-endpoint', Reply.HOST_UNREACHABLE, `Service ${t.namespace}/${t.name}: no endpoint answered`)
  }

  private planFor (t: Extract<Target, { kind: 'service' }>): ServicePortPlan {
    const snap = this.opts.snapshot!()
    const svc = snap.services.get(serviceKey(t.namespace, t.name))
    const ports: ServicePortPlan[] = []
    if (svc != null) planService(svc, snap.endpoints.get(serviceKey(t.namespace, t.name))?.values() ?? [], { nodeName: this.opts.own.nodeName, directCidrs: this.opts.directCidrs, destinationRules: [], clusterDomain: this.opts.clusterDomain }, this.cidrs, ports)
    const plan = ports.find((p) => p.port === t.port && p.protocol === 'TCP')
    if (plan == null) {
      const offered = svc?.ports.filter((p) => p.protocol === 'TCP').map((p) => p.port) ?? []
      if (svc != null && (svc.headless || svc.externalName != null)) throw new Refusal('no-endpoint', Reply.HOST_UNREACHABLE, `Service ${t.namespace}/${t.name} is ${svc.headless ? 'headless' : 'an ExternalName'}: no ClusterIP endpoints to proxy`)
      throw new Refusal('service-port-not-allowed', Reply.NOT_ALLOWED, `port ${t.port} is not a TCP port of Service ${t.namespace}/${t.name} [${offered.join(', ')}]`)
    }
    return plan
  }

  // ---- refusals

  /** Counts, logs (once per reason, client and target every 10 s), replies when the handshake got that far, and closes. */
  private refuse (socket: Socket, client: string, kind: TargetKind, r: Refusal, target: string | undefined, sendReply = true): void {
    const { metrics, log } = this.opts
    metrics.refusals.inc({ reason: r.reason })
    metrics.connections.inc({ target: kind, result: r.reason })
    const clientIp = client.slice(0, client.lastIndexOf(':'))
    if (this.throttle.shouldLog(`${r.reason}|${clientIp}|${target ?? ''}|${r.message}`, Date.now())) {
      log.warn({ client, target, reason: r.reason, reply: r.reply >= 0 ? `0x${r.reply.toString(16).padStart(2, '0')}` : undefined, detail: r.message }, 'socks5: refused')
    }
    if (socket.destroyed) return
    if (sendReply && r.reply >= 0) socket.write(encodeReply(r.reply))
    socket.end()
    setTimeout(() => { socket.destroy() }, LINGER_MS).unref()
  }

  async stop (): Promise<void> {
    this.stopped = true
    for (const s of this.sockets) s.destroy()
    await Promise.all(this.servers.map(async (srv) => { await new Promise<void>((resolve) => { srv.close(() => { resolve() }) }) }))
  }
}

const timedOut = (signal: AbortSignal): boolean => signal.aborted && (signal.reason as Error | undefined)?.name === 'TimeoutError'

/** A node's answer (or our own dial of this node) as the reply for the client. */
function refusalOfNodeStatus (status: NodeStatus, node: string, detail: string): Refusal {
  switch (status) {
    case NodeStatus.PORT_NOT_ALLOWED: return new Refusal('remote-port-not-allowed', Reply.NOT_ALLOWED, `${detail} (the port is not in that node's socks5.allowedPorts)`)
    case NodeStatus.REFUSED: return new Refusal('connection-refused', Reply.CONNECTION_REFUSED, detail)
    case NodeStatus.TIMEOUT: return new Refusal('connect-timeout', Reply.TTL_EXPIRED, detail)
    case NodeStatus.UNREACHABLE: return new Refusal('host-unreachable', Reply.HOST_UNREACHABLE, detail)
    case NodeStatus.NOT_THIS_NODE: return new Refusal('node-unreachable', Reply.NETWORK_UNREACHABLE, `${detail} (the peer directory maps ${node} to another node's agent)`)
    default: return new Refusal('general-failure', Reply.GENERAL_FAILURE, detail)
  }
}

/** `p`, or the signal's reason once it aborts; a connection `p` brings after that is closed, never leaked. */
async function abortable<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  const dispose = (v: any): void => { if (typeof v?.destroy === 'function') v.destroy(); v?.stream?.abort?.(new Error('aborted')) }
  if (signal.aborted) { p.then(dispose, () => {}); throw signal.reason }
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { reject(signal.reason); p.then(dispose, () => {}) }
    signal.addEventListener('abort', onAbort, { once: true })
    p.then((v) => { signal.removeEventListener('abort', onAbort); resolve(v) }, (e) => { signal.removeEventListener('abort', onAbort); reject(e) })
  })
}
