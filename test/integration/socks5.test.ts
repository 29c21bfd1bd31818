// The SOCKS5 server end to end in one process, with real sockets: a SOCKS client on loopback,
// agent A's server, real yamux streams standing in for the tunnel, agent B's node side and
// proxy side, and real TCP targets. CONNECT by node name (and name.suffix) and by Service name
// with bytes equal, half-close carried both ways, each refusal with its RFC 1928 code, its log
// line and its counter, auth on and off, 200 connections at once.
import { createHash, randomBytes } from 'node:crypto'
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { Writable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { pino } from 'pino'
import type { Stream } from '@libp2p/interface'
import type { EndpointSliceInfo, ServiceInfo } from '../../agent/catalog/model.ts'
import { CatalogStore, type CatalogSnapshot } from '../../agent/catalog/store.ts'
import { readPrefix } from '../../agent/proxy/pipe.ts'
import { ProxyMetrics } from '../../agent/proxy/metrics.ts'
import { RemoteServer } from '../../agent/proxy/remote.ts'
import { PROXY_PROTOCOL } from '../../agent/proxy/wire.ts'
import type { OpenStreamOptions, TunnelApi } from '../../agent/tunnel/tunnel.ts'
import { AUTH_FAILED, socks5Connect, Socks5ReplyError, type ConnectOptions } from '../../agent/socks5/client.ts'
import { credentialVerifier } from '../../agent/socks5/auth.ts'
import { Socks5Metrics } from '../../agent/socks5/metrics.ts'
import { NodeServer } from '../../agent/socks5/node-server.ts'
import { encodeNodeRequest, NodeStatus, SOCKS5_NODE_PROTOCOL } from '../../agent/socks5/node-wire.ts'
import { Socks5Server, type NodeKind } from '../../agent/socks5/server.ts'
import { AddressType, AuthMethod, Command, Reply } from '../../agent/socks5/wire.ts'
import { Metrics } from '../../shared/metrics.ts'
import { YamuxPairs } from '../lab/yamux-pair.ts'

// ---------------------------------------------------------------- an in-process tunnel

const yamuxPairs = new YamuxPairs()

type Handler = (stream: Stream, peer: { node: string, peerId: string }) => void
/** Agents by node name: their handlers, and which nodes are offline or never answer. */
class Mesh {
  readonly handlers = new Map<string, Map<string, Handler>>()
  readonly offline = new Set<string>()
  readonly silent = new Set<string>()
  tunnel (self: string): TunnelApi {
    return {
      openStream: async (node: string, protocol: string, opts?: OpenStreamOptions) => {
        if (this.offline.has(node)) throw new Error(`cannot reach ${node}: hole punching failed (symmetric NAT or UDP filtered); relay-tcp failed (no reservation)`)
        if (this.silent.has(node)) {
          return await new Promise<Stream>((_resolve, reject) => { opts?.signal?.addEventListener('abort', () => { reject(opts.signal!.reason) }) })
        }
        const h = this.handlers.get(node)?.get(protocol)
        if (h == null) { const e = new Error(`Protocol selection failed - could not negotiate ${protocol}`); e.name = 'UnsupportedProtocolError'; throw e }
        const [out, inbound] = await yamuxPairs.pair()
        if (opts?.firstData != null) out.send(opts.firstData)
        h(inbound, { node: self, peerId: `peer-${self}` })
        return out
      },
      handle: async (protocol: string, handler: Handler) => {
        const m = this.handlers.get(self) ?? new Map<string, Handler>()
        m.set(protocol, handler)
        this.handlers.set(self, m)
      }
    }
  }
}

// ---------------------------------------------------------------- targets

const servers: Server[] = []
async function listen (onConnection: (s: Socket) => void): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, onConnection)
  servers.push(server)
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  return (server.address() as AddressInfo).port
}
/** Echoes, and ends its side once the client's FIN arrived (allowHalfOpen: the pipe carries the end). */
const echo = (s: Socket): void => { s.on('error', () => {}); s.pipe(s) }
/** Reads everything until the client's FIN, then answers the SHA-256 and byte count, then ends. */
const digestAfterEnd = (s: Socket): void => {
  s.on('error', () => {})
  const h = createHash('sha256')
  let n = 0
  s.on('data', (c: Buffer) => { h.update(c); n += c.length })
  s.once('end', () => { s.end(`${h.digest('hex')} ${n}\n`) })
}
async function unusedPort (): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => { s.listen(0, '127.0.0.1', resolve) })
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((resolve) => { s.close(() => { resolve() }) })
  return port
}

function snapshotOf (services: ServiceInfo[], slices: EndpointSliceInfo[]): CatalogSnapshot {
  const store = new CatalogStore()
  store.setSource('api')
  for (const s of services) store.upsert('services', s)
  for (const s of slices) store.upsert('endpointSlices', s)
  return store.commit()!.snapshot
}
const service = (name: string, ports: number[]): ServiceInfo => ({
  namespace: 'shop', name, resourceVersion: '1', type: 'ClusterIP', clusterIPs: ['10.96.0.10'], headless: false,
  ports: ports.map((p) => ({ name: `p${p}`, port: p, protocol: 'TCP', targetPort: p })), sessionAffinity: 'None', affinityTimeoutSeconds: 10_800, publishNotReadyAddresses: false
})

// ---------------------------------------------------------------- the agents

interface LogLine { msg: string, reason?: string, reply?: string, target?: string, result?: string, port?: number }
function capture (): { log: pino.Logger, lines: LogLine[] } {
  const lines: LogLine[] = []
  const sink = new Writable({ write (chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l)); cb() } })
  return { log: pino({ level: 'info' }, sink), lines }
}

const mesh = new Mesh()
const metricsA = new Metrics({ processMetrics: false })
const metricsB = new Metrics({ processMetrics: false })
const logA = capture()
const logB = capture()
let serverA: Socks5Server
let authServer: Socks5Server
/** short deadlines, for the cases that wait them out; serverA and authServer have long ones (nothing that must succeed races a deadline on a loaded machine) */
let quickServer: Socks5Server
let quickAddr: { host: string, port: number }
let nodeB: NodeServer
let socksAddr: { host: string, port: number }
let authAddr: { host: string, port: number }
let ECHO: number, DIGEST: number, CLOSED: number, ONLY_A: number, NOT_ALLOWED: number

const NODES: Record<string, NodeKind> = { 'edge-a': 'self', 'edge-b': 'peer', 'edge-off': 'peer', 'edge-old': 'peer', 'edge-silent': 'peer', 'edge-mute': 'peer', 'edge-bare': 'no-agent' }

beforeAll(async () => {
  ECHO = await listen(echo)
  DIGEST = await listen(digestAfterEnd)
  CLOSED = await unusedPort()
  ONLY_A = await unusedPort()
  NOT_ALLOWED = await listen(echo)
  mesh.silent.add('edge-silent')
  mesh.offline.add('edge-off')
  mesh.handlers.set('edge-old', new Map()) // an agent without the SOCKS5 node side
  mesh.handlers.set('edge-mute', new Map([[SOCKS5_NODE_PROTOCOL, () => {}]])) // takes the stream, never answers

  // agent B: the node side (allows ECHO, DIGEST, CLOSED; not ONLY_A) and the proxy's serving side
  const tunnelB = mesh.tunnel('edge-b')
  const smB = new Socks5Metrics(metricsB)
  nodeB = new NodeServer({ node: { nodeName: 'edge-b', allowedPorts: [ECHO, DIGEST, CLOSED], dialAddresses: ['127.0.0.1'], connectTimeoutMs: 5_000 }, log: logB.log, metrics: smB })
  await tunnelB.handle(SOCKS5_NODE_PROTOCOL, (s, p) => { nodeB.serve(s, p) })
  const snap = snapshotOf([service('web', [80]), service('empty', [80])], [{
    namespace: 'shop', name: 'web-1', resourceVersion: '1', serviceName: 'web', addressType: 'IPv4',
    ports: [{ name: 'p80', port: ECHO, protocol: 'TCP' }],
    endpoints: [{ addresses: ['127.0.0.1'], ready: true, serving: true, terminating: false, nodeName: 'edge-b' }]
  }])
  const remoteB = new RemoteServer({ nodeName: 'edge-b', snapshot: () => snap, log: logB.log, metrics: new ProxyMetrics(metricsB), connectTimeoutMs: 5_000, udpIdleMs: 10_000 })
  await tunnelB.handle(PROXY_PROTOCOL, (s, p) => { remoteB.serve(s, p) })

  // agent A: the SOCKS server (allows ONLY_A too, which B refuses), no auth; and one with auth
  const common = {
    own: { nodeName: 'edge-a', allowedPorts: [ECHO, DIGEST, CLOSED, ONLY_A], dialAddresses: ['127.0.0.1'], connectTimeoutMs: 1_500 },
    clusterDomain: 'cluster.local', nodeSuffix: 'edge', services: true, handshakeTimeoutMs: 1_000, connectTimeoutMs: 1_500, maxConnections: 1024,
    tunnel: mesh.tunnel('edge-a'), nodeKind: async (n: string) => await Promise.resolve(NODES[n]) /* answered later, like the API lookup of a node with no agent */, snapshot: () => snap, directCidrs: [], log: logA.log, metrics: new Socks5Metrics(metricsA)
  }
  const patient = { handshakeTimeoutMs: 10_000, connectTimeoutMs: 15_000, own: { ...common.own, connectTimeoutMs: 15_000 } }
  serverA = await Socks5Server.start({ ...common, ...patient, listen: [{ host: '127.0.0.1', port: 0 }] })
  quickServer = await Socks5Server.start({ ...common, listen: [{ host: '127.0.0.1', port: 0 }] })
  authServer = await Socks5Server.start({ ...common, ...patient, listen: [{ host: '127.0.0.1', port: 0 }], verify: credentialVerifier({ username: Buffer.from('ops'), password: Buffer.from('s3cret') }) })
  const at = (s: Socks5Server): { host: string, port: number } => { const [host, port] = s.addresses[0]!.split(':'); return { host: host!, port: Number(port) } }
  socksAddr = at(serverA)
  quickAddr = at(quickServer)
  authAddr = at(authServer)
})

afterAll(async () => {
  await serverA?.stop()
  await quickServer?.stop()
  await authServer?.stop()
  nodeB?.stop()
  yamuxPairs.abortAll()
  for (const s of servers.splice(0)) s.close()
})

// ---------------------------------------------------------------- client helpers

async function open (opts: ConnectOptions, addr = socksAddr): Promise<{ socket: Socket, rest: Buffer }> {
  const socket = createConnection({ ...addr, allowHalfOpen: true })
  socket.on('error', () => {})
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  try {
    const { rest } = await socks5Connect(socket, { timeoutMs: 10_000, ...opts })
    return { socket, rest }
  } catch (err) {
    socket.destroy()
    throw err
  }
}
/** The reply code of a refused CONNECT. */
async function refusal (opts: ConnectOptions, addr = socksAddr): Promise<number> {
  try {
    const { socket } = await open(opts, addr)
    socket.destroy()
  } catch (err) {
    if (err instanceof Socks5ReplyError) return err.reply
    throw err
  }
  throw new Error(`${opts.host}:${opts.port} was not refused`)
}
/** Everything the socket sends until its FIN, resuming it. */
async function readAll (socket: Socket, rest: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  const parts: Buffer[] = [rest]
  return await new Promise((resolve, reject) => {
    socket.on('data', (c: Buffer) => parts.push(c))
    socket.once('end', () => { resolve(Buffer.concat(parts)) })
    socket.once('error', reject)
    socket.resume()
  })
}
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')
async function metric (m: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const v = (await m.registry.getSingleMetric(name)!.get()).values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val))
  return v?.value ?? 0
}

// ---------------------------------------------------------------- tests

describe('SOCKS5 CONNECT', () => {
  it('a node by name and by name.suffix over the tunnel: 4 MiB echoed byte for byte, then both FINs', async () => {
    for (const host of ['edge-b', 'edge-b.edge', 'EDGE-B.edge.']) {
      const { socket, rest } = await open({ host, port: ECHO })
      const data = randomBytes(4 << 20)
      const got = readAll(socket, rest)
      socket.end(data)
      const echoed = await got
      expect(echoed.length).toBe(data.length)
      expect(sha(echoed)).toBe(sha(data))
      await new Promise<void>((resolve) => { socket.once('close', () => { resolve() }); if (socket.closed) resolve() })
    }
    expect(await metric(metricsA, 'edgemesh_socks5_connections_total', { target: 'node', result: 'ok' })).toBeGreaterThanOrEqual(3)
    expect(await metric(metricsB, 'edgemesh_socks5_remote_requests_total', { result: 'ok' })).toBeGreaterThanOrEqual(3)
  })

  it('half-close is carried end to end: the target answers after the client\'s FIN, the client still gets it', async () => {
    for (const host of ['edge-b', 'edge-a']) { // over the tunnel, and this node itself
      const { socket, rest } = await open({ host, port: DIGEST })
      const data = randomBytes(1 << 20)
      const got = readAll(socket, rest)
      socket.end(data) // our FIN: the target sees 'end' only if it travelled through A, the tunnel and B
      expect((await got).toString()).toBe(`${sha(data)} ${data.length}\n`)
    }
  })

  it('a Service by name (svc.ns and svc.ns.svc.<domain>) reaches its endpoint on another node through the proxy protocol', async () => {
    for (const host of ['web.shop', 'web.shop.svc.cluster.local']) {
      const { socket, rest } = await open({ host, port: 80 })
      const got = readAll(socket, rest)
      socket.end('GET / HTTP/1.0\r\n\r\n')
      expect((await got).toString()).toBe('GET / HTTP/1.0\r\n\r\n')
    }
    expect(await metric(metricsA, 'edgemesh_socks5_connections_total', { target: 'service', result: 'ok' })).toBe(2)
  })

  it('bytes and the FIN the client sends right behind its request (before the reply) reach the target', async () => {
    const { encodeGreeting, encodeRequest } = await import('../../agent/socks5/wire.ts')
    for (const host of ['edge-b', 'edge-a']) {
      for (const early of ['early bytes', '']) { // '': the FIN alone, as `nc -X 5 ... < /dev/null` sends it
        const socket = createConnection({ ...socksAddr, allowHalfOpen: true })
        await new Promise<void>((resolve) => { socket.once('connect', resolve) })
        const got = readAll(socket)
        socket.end(Buffer.concat([encodeGreeting([0]), encodeRequest({ host, port: ECHO }), Buffer.from(early)]))
        const all = await got
        expect(all.subarray(0, 2).toString('hex')).toBe('0500')
        expect(all.subarray(2, 12).toString('hex')).toBe('05000001000000000000')
        expect(all.subarray(12).toString()).toBe(early)
      }
    }
  })

  it('200 connections at once through one server: all succeed, data intact', async () => {
    const results = await Promise.all(Array.from({ length: 200 }, async (_, i) => {
      const { socket, rest } = await open({ host: i % 2 === 0 ? 'edge-b' : 'edge-b.edge', port: ECHO })
      const data = randomBytes(64 * 1024 + i)
      const got = readAll(socket, rest)
      socket.end(data)
      return sha(await got) === sha(data)
    }))
    expect(results.filter(Boolean).length).toBe(200)
  })
})

describe('SOCKS5 refusals: the RFC 1928 code, one log line with the reason, one count', () => {
  const cases: Array<{ name: string, opts: () => ConnectOptions, reply: number, reason: string, quick?: true }> = [
    { name: 'an IPv4 target', opts: () => ({ host: '127.0.0.1', port: ECHO }), reply: Reply.ADDRESS_TYPE_NOT_SUPPORTED, reason: 'address-type-not-supported' },
    { name: 'an IP literal sent as a name', opts: () => ({ host: '10.0.0.1', port: 22, addressType: AddressType.DOMAIN }), reply: Reply.ADDRESS_TYPE_NOT_SUPPORTED, reason: 'address-type-not-supported' },
    { name: 'an unknown node', opts: () => ({ host: 'edge-nowhere', port: ECHO }), reply: Reply.HOST_UNREACHABLE, reason: 'unknown-target' },
    { name: 'a port outside the local allow-list', opts: () => ({ host: 'edge-b', port: NOT_ALLOWED }), reply: Reply.NOT_ALLOWED, reason: 'port-not-allowed' },
    { name: 'a port the target agent does not allow (local check passed)', opts: () => ({ host: 'edge-b', port: ONLY_A }), reply: Reply.NOT_ALLOWED, reason: 'remote-port-not-allowed' },
    { name: 'an offline node', opts: () => ({ host: 'edge-off', port: ECHO }), reply: Reply.NETWORK_UNREACHABLE, reason: 'node-unreachable' },
    { name: 'a node with no agent', opts: () => ({ host: 'edge-bare', port: ECHO }), reply: Reply.NETWORK_UNREACHABLE, reason: 'node-unreachable' },
    { name: 'a node whose agent does not serve SOCKS5', opts: () => ({ host: 'edge-old', port: ECHO }), reply: Reply.NOT_ALLOWED, reason: 'node-not-serving' },
    { name: 'nothing listening on the node\'s port (over the tunnel)', opts: () => ({ host: 'edge-b', port: CLOSED }), reply: Reply.CONNECTION_REFUSED, reason: 'connection-refused' },
    { name: 'nothing listening on this node\'s port', opts: () => ({ host: 'edge-a.edge', port: CLOSED }), reply: Reply.CONNECTION_REFUSED, reason: 'connection-refused' },
    { name: 'a node the tunnel cannot reach within the deadline (offline, record not expired yet)', opts: () => ({ host: 'edge-silent', port: ECHO }), reply: Reply.NETWORK_UNREACHABLE, reason: 'node-unreachable', quick: true },
    { name: 'a node reached whose agent does not answer in time (connect timeout)', opts: () => ({ host: 'edge-mute', port: ECHO }), reply: Reply.TTL_EXPIRED, reason: 'connect-timeout', quick: true },
    { name: 'BIND', opts: () => ({ host: 'edge-b', port: ECHO, command: Command.BIND }), reply: Reply.COMMAND_NOT_SUPPORTED, reason: 'command-not-supported' },
    { name: 'UDP ASSOCIATE', opts: () => ({ host: 'edge-b', port: ECHO, command: Command.UDP_ASSOCIATE }), reply: Reply.COMMAND_NOT_SUPPORTED, reason: 'command-not-supported' },
    { name: 'a port that is not one of the Service\'s', opts: () => ({ host: 'web.shop', port: 81 }), reply: Reply.NOT_ALLOWED, reason: 'service-port-not-allowed' },
    { name: 'a Service without a ready endpoint', opts: () => ({ host: 'empty.shop.svc', port: 80 }), reply: Reply.HOST_UNREACHABLE, reason: 'no-endpoint' }
  ]
  for (const c of cases) {
    it(`${c.name}: 0x0${c.reply} ${c.reason}`, async () => {
      const before = await metric(metricsA, 'edgemesh_socks5_refusals_total', { reason: c.reason })
      const linesBefore = logA.lines.filter((l) => l.msg === 'socks5: refused' && l.reason === c.reason).length
      const opts = c.opts()
      expect(await refusal(opts, c.quick === true ? quickAddr : socksAddr)).toBe(c.reply)
      expect(await metric(metricsA, 'edgemesh_socks5_refusals_total', { reason: c.reason })).toBe(before + 1)
      const lines = logA.lines.filter((l) => l.msg === 'socks5: refused' && l.reason === c.reason)
      expect(lines.length).toBe(linesBefore + 1)
      expect(lines.at(-1)).toMatchObject({ target: `${opts.host}:${opts.port}`, reply: `0x0${c.reply}` })
    })
  }

  it('the target agent enforces its allow-list for a client that skips the local check (raw node protocol)', async () => {
    const before = await metric(metricsB, 'edgemesh_socks5_remote_requests_total', { result: 'port-not-allowed' })
    for (const port of [ONLY_A, NOT_ALLOWED, 25, 25]) { // 25 twice: counted twice, logged once
      const stream = await mesh.tunnel('edge-rogue').openStream('edge-b', SOCKS5_NODE_PROTOCOL)
      stream.send(encodeNodeRequest({ node: 'edge-b', port }))
      const { value } = await readPrefix(stream, (b) => ({ value: b[0], length: 1 }), 5_000)
      expect(value).toBe(NodeStatus.PORT_NOT_ALLOWED)
    }
    // and a request meant for another node is not served either
    const stream = await mesh.tunnel('edge-rogue').openStream('edge-b', SOCKS5_NODE_PROTOCOL)
    stream.send(encodeNodeRequest({ node: 'edge-c', port: ECHO }))
    expect((await readPrefix(stream, (b) => ({ value: b[0], length: 1 }), 5_000)).value).toBe(NodeStatus.NOT_THIS_NODE)
    expect(await metric(metricsB, 'edgemesh_socks5_remote_requests_total', { result: 'port-not-allowed' })).toBe(before + 4)
    expect(logB.lines.filter((l) => l.msg === 'socks5: refused a node request from a peer' && l.result === 'port-not-allowed' && l.port === 25)).toHaveLength(1)
  })

  it('a client that never finishes its handshake is closed at the deadline and counted', async () => {
    const before = await metric(metricsA, 'edgemesh_socks5_refusals_total', { reason: 'handshake-timeout' })
    const socket = createConnection(quickAddr)
    socket.on('error', () => {})
    socket.write(Uint8Array.of(5, 1)) // half a greeting
    await new Promise<void>((resolve) => { socket.once('close', () => { resolve() }); socket.resume() })
    expect(await metric(metricsA, 'edgemesh_socks5_refusals_total', { reason: 'handshake-timeout' })).toBe(before + 1)
  })
})

describe('SOCKS5 server under garbage', () => {
  it('300 connections sending random and mutated handshakes (some with a FIN, some left open): every one ends, the server still serves', async () => {
    const { encodeGreeting, encodeRequest, encodeUserPass } = await import('../../agent/socks5/wire.ts')
    let seed = 7
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
    const valid = (): Buffer => Buffer.concat([encodeGreeting([rnd(2) === 0 ? 0 : 2]), ...(rnd(2) === 0 ? [encodeUserPass('ops', 'x')] : []), encodeRequest({ host: rnd(2) === 0 ? 'edge-b' : 'edge-nowhere', port: rnd(2) === 0 ? ECHO : 1 + rnd(65535), command: 1 + rnd(3) })])
    let connected = 0
    const inputs = Array.from({ length: 300 }, (_, i) => {
      const b = i % 3 === 0 ? Buffer.from(Array.from({ length: rnd(40) }, () => rnd(256))) : valid()
      if (i % 3 === 1) b[rnd(b.length)] = rnd(256)
      if (i % 3 === 2) return b.subarray(0, rnd(b.length + 1))
      return b
    })
    const ended = await Promise.all(inputs.map(async (bytes, i) => {
      const socket = createConnection({ ...quickAddr, allowHalfOpen: true })
      socket.on('error', () => {})
      // a handshake that stayed valid connects (to the echo server): such a client ends it itself
      let got = Buffer.alloc(0)
      socket.on('data', (c: Buffer) => {
        got = Buffer.concat([got, c])
        if (got.includes(Buffer.from('05000001000000000000', 'hex')) && !socket.writableEnded) { connected++; socket.end() }
      })
      // the server's FIN (or a reset) ends it; the client (allowHalfOpen, as a test client) then closes its side
      const closed = new Promise<boolean>((resolve) => { socket.once('end', () => { socket.end(); resolve(true) }); socket.once('close', () => { resolve(true) }) })
      await new Promise<void>((resolve) => { socket.once('connect', resolve) })
      socket.write(bytes)
      if (i % 2 === 0) socket.end()
      // the handshake deadline (1 s) or a refusal's linger (2 s) ends every one; 20 s is a bound, not a timing
      const timer = new Promise<boolean>((resolve) => { setTimeout(() => { resolve(false) }, 20_000).unref() })
      const ok = await Promise.race([closed, timer])
      if (!ok) socket.destroy() // the server failed to end it: only the test cleans it up
      return ok
    }))
    expect(ended.filter(Boolean).length).toBe(300)
    expect(connected).toBeLessThan(300)
    // and the server holds none of them any more (a refused one lingers at most 2 s for the client's FIN)
    for (let i = 0; i < 200 && quickServer.connections > 0; i++) await new Promise((resolve) => setTimeout(resolve, 50))
    expect(quickServer.connections).toBe(0)
    const { socket, rest } = await open({ host: 'edge-b', port: ECHO }, quickAddr)
    const got = readAll(socket, rest)
    socket.end('still serving')
    expect((await got).toString()).toBe('still serving')
  })
})

describe('SOCKS5 authentication', () => {
  it('auth on: the right credentials connect; wrong ones get 01 01; a no-auth client gets 05 FF', async () => {
    const authFailed = await metric(metricsA, 'edgemesh_socks5_refusals_total', { reason: 'auth-failed' })
    const noMethod = await metric(metricsA, 'edgemesh_socks5_refusals_total', { reason: 'no-acceptable-method' })
    const { socket, rest } = await open({ host: 'edge-b', port: ECHO, auth: { username: 'ops', password: 's3cret' } }, authAddr)
    const got = readAll(socket, rest)
    socket.end('authenticated')
    expect((await got).toString()).toBe('authenticated')
    expect(await refusal({ host: 'edge-b', port: ECHO, auth: { username: 'ops', password: 's3cret!' } }, authAddr)).toBe(AUTH_FAILED)
    expect(await refusal({ host: 'edge-b', port: ECHO, auth: { username: 'op', password: 's3cret' } }, authAddr)).toBe(AUTH_FAILED)
    expect(await refusal({ host: 'edge-b', port: ECHO }, authAddr)).toBe(AuthMethod.NO_ACCEPTABLE)
    expect(await metric(metricsA, 'edgemesh_socks5_refusals_total', { reason: 'auth-failed' })).toBe(authFailed + 2)
    expect(await metric(metricsA, 'edgemesh_socks5_refusals_total', { reason: 'no-acceptable-method' })).toBe(noMethod + 1)
  })

  it('auth off: a client offering only username/password gets 05 FF', async () => {
    expect(await refusal({ host: 'edge-b', port: ECHO, auth: { username: 'ops', password: 's3cret' } })).toBe(AuthMethod.NO_ACCEPTABLE)
  })
})

describe('SOCKS5 connection cap', () => {
  it('connections still in their handshake count against maxConnections: one over it is closed at once and counted; a freed slot serves again', async () => {
    const metrics = new Metrics()
    const capped = await Socks5Server.start({
      own: { nodeName: 'edge-a', allowedPorts: [ECHO], dialAddresses: ['127.0.0.1'], connectTimeoutMs: 15_000 },
      clusterDomain: 'cluster.local', nodeSuffix: 'edge', services: false, handshakeTimeoutMs: 10_000, connectTimeoutMs: 15_000, maxConnections: 3,
      tunnel: mesh.tunnel('edge-a'), nodeKind: (n: string) => NODES[n], snapshot: () => snapshotOf([], []), directCidrs: [], log: logA.log, metrics: new Socks5Metrics(metrics),
      listen: [{ host: '127.0.0.1', port: 0 }]
    })
    try {
      const [host, port] = capped.addresses[0]!.split(':')
      const addr = { host: host!, port: Number(port) }
      const connect = async (): Promise<Socket> => {
        const s = createConnection({ ...addr, allowHalfOpen: true })
        s.on('error', () => {})
        await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
        return s
      }
      // three clients that connect and say nothing: they hold every slot
      const idle = [await connect(), await connect(), await connect()]
      await vi.waitFor(() => { expect(capped.connections).toBe(3) }, { timeout: 5_000, interval: 10 })
      const over = await connect()
      const closed = await new Promise<boolean>((resolve) => { over.once('end', () => { resolve(true) }); over.once('close', () => { resolve(true) }); over.resume() })
      expect(closed).toBe(true)
      expect(await metric(metrics, 'edgemesh_socks5_refusals_total', { reason: 'too-many-connections' })).toBe(1)
      expect(logA.lines.some((l) => l.msg === 'socks5: refused' && l.reason === 'too-many-connections')).toBe(true)
      // one of the silent clients leaves: the next client is served, bytes intact
      idle[0]!.destroy()
      await vi.waitFor(() => { expect(capped.connections).toBe(2) }, { timeout: 5_000, interval: 10 })
      const s = await connect()
      const { rest } = await socks5Connect(s, { host: 'edge-b', port: ECHO, timeoutMs: 10_000 })
      const data = randomBytes(64 << 10)
      const got = readAll(s, rest)
      s.end(data)
      expect(sha(await got)).toBe(sha(data))
      for (const x of idle) x.destroy()
    } finally {
      await capped.stop()
    }
  })
})
