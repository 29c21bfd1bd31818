// The proxy's stream plumbing (readPrefix, spliceSocketStream) over real yamux streams and real
// TCP sockets. The connection under yamux coalesces what one side sends within an event-loop
// turn into one chunk, as the UDX connection does: a header, data and the FIN behind it then
// reach yamux together and are delivered in one tick — the case where a late listener used to
// miss the FIN and the client hung until its timeout (a CI flake of the endpoint-removal e2e).
import { createHash } from 'node:crypto'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import type { Stream } from '@libp2p/interface'
import { readPrefix, spliceSocketStream } from '../../agent/proxy/pipe.ts'
import { ServicePortListener } from '../../agent/proxy/listener.ts'
import { ProxyMetrics } from '../../agent/proxy/metrics.ts'
import type { ServicePortPlan } from '../../agent/proxy/plan.ts'
import { decodeRequest, ProxyStatus } from '../../agent/proxy/wire.ts'
import type { OpenStreamOptions, TunnelApi } from '../../agent/tunnel/tunnel.ts'
import { Metrics } from '../../shared/metrics.ts'
import { createLogger } from '../../shared/logging.ts'
import { YamuxPairs } from '../lab/yamux-pair.ts'
import { MAX_STREAM_WINDOW_BYTES } from '../../shared/yamux.ts'

const yamuxPairs = new YamuxPairs()
const servers: Server[] = []
afterEach(() => {
  yamuxPairs.abortAll()
  for (const s of servers.splice(0)) s.close()
})

/** A connected TCP pair on loopback: [the proxy's side, the application's side]. */
async function socketPair (): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true })
  servers.push(server)
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  const accepted = new Promise<Socket>((resolve) => { server.once('connection', resolve) })
  const app = createConnection({ port: (server.address() as any).port, host: '127.0.0.1', allowHalfOpen: true })
  await new Promise((resolve) => app.once('connect', resolve))
  return [await accepted, app]
}

/** Everything `socket` receives until its FIN (rejects after `ms`). */
async function readAll (socket: Socket, ms: number, slowly = false): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    const timer = setTimeout(() => { reject(new Error(`no FIN within ${ms} ms (${Buffer.concat(parts).length} bytes)`)) }, ms)
    socket.on('data', (b) => {
      parts.push(b)
      if (slowly) { socket.pause(); setTimeout(() => socket.resume(), 1) }
    })
    socket.once('end', () => { clearTimeout(timer); resolve(Buffer.concat(parts)) })
  })
}

function patterned (size: number, seed: number): Buffer {
  const b = Buffer.alloc(size)
  for (let i = 0; i < size; i++) b[i] = (i * seed + (i >> 13)) & 0xff
  return b
}
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** The most bytes `stream` held unread (libp2p checks its read buffer after every frame it buffers). */
function watchReadBuffer (stream: Stream): { bytes: number } {
  const peak = { bytes: 0 }
  const s = stream as any
  const check = s.checkReadBufferLength.bind(s)
  s.checkReadBufferLength = () => { peak.bytes = Math.max(peak.bytes, s.readBufferLength); check() }
  return peak
}

/** Writes `data` in 64 KiB chunks, waiting for 'drain' whenever the socket's buffer is full. */
async function writeAll (socket: Socket, data: Buffer): Promise<void> {
  for (let off = 0; off < data.length; off += 64 * 1024) {
    if (!socket.write(data.subarray(off, off + 64 * 1024))) await new Promise((resolve) => socket.once('drain', resolve))
  }
}

/**
 * Everything `socket` receives until its FIN, read like a slow client: nothing for the first
 * second, again nothing for a second at the half, otherwise 256 KiB per 5 ms timer (at most
 * ~50 MB/s, less on a loaded machine).
 */
async function readSlowly (socket: Socket, ms: number): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let got = 0
    let sinceNap = 0
    let stalledAtHalf = false
    const timer = setTimeout(() => { reject(new Error(`no FIN within ${ms} ms (${got} bytes)`)) }, ms)
    const nap = (napMs: number): void => { socket.pause(); setTimeout(() => socket.resume(), napMs) }
    socket.on('data', (b) => {
      parts.push(b); got += b.length; sinceNap += b.length
      if (!stalledAtHalf && got >= 25_000_000) { stalledAtHalf = true; sinceNap = 0; nap(1_000) } else if (sinceNap >= 256 * 1024) { sinceNap = 0; nap(5) }
    })
    nap(1_000)
    socket.once('end', () => { clearTimeout(timer); resolve(Buffer.concat(parts)) })
    socket.once('error', reject)
  })
}

describe('proxy stream plumbing over yamux', () => {
  it('a status byte, the reply and the FIN arriving in one chunk: the client gets the reply and its end', async () => {
    for (let i = 0; i < 20; i++) {
      const [client, server] = await yamuxPairs.pair()
      const reply = Buffer.from(`reply ${i}\n`)
      server.send(Uint8Array.of(0)); server.send(reply); void server.close()
      const { value, rest } = await readPrefix(client, (b) => ({ value: b[0], length: 1 }), 1_000)
      expect(value).toBe(0)
      const [proxySide, app] = await socketPair()
      const got = readAll(app, 2_000)
      const spliced = spliceSocketStream(proxySide, client, undefined, rest)
      expect((await got).equals(reply)).toBe(true)
      app.end()
      expect((await spliced).down).toBe(reply.length)
    }
  })

  it('a request whose FIN arrives while the remote side is still dialling: the endpoint sees the request and its end', async () => {
    const [client, server] = await yamuxPairs.pair()
    client.send(Buffer.from('HEAD\n')); client.send(Buffer.from('body')); void client.close()
    const { rest } = await readPrefix(server, (b) => { const i = b.indexOf(10); return i < 0 ? 'short' : { value: i, length: i + 1 } }, 1_000)
    await new Promise((resolve) => setTimeout(resolve, 50)) // the dial
    const [proxySide, endpoint] = await socketPair()
    const got = readAll(endpoint, 2_000)
    const spliced = spliceSocketStream(proxySide, server, undefined, rest)
    expect((await got).toString()).toBe('body')
    endpoint.end()
    await spliced
  })

  it('a large reply to a slow reader, FIN right behind the data: every byte arrives before the end', async () => {
    const [client, server] = await yamuxPairs.pair()
    const [proxySide, app] = await socketPair()
    const got = readAll(app, 60_000, true)
    const spliced = spliceSocketStream(proxySide, client)
    const payload = Buffer.alloc(3 << 20)
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 131 + (i >> 11)) & 0xff
    for (let off = 0; off < payload.length; off += 64 * 1024) server.send(payload.subarray(off, off + 64 * 1024))
    void server.close()
    const received = await got
    expect(received.length).toBe(payload.length)
    expect(received.equals(payload)).toBe(true)
    app.end()
    await spliced
  })

  it('50 MB each way between a listener and a serving side whose readers stall, then read at a limited rate: every byte arrives (SHA-256), no stream fails', async () => {
    // Both ends spliced as in production: app <-> listener side <-> yamux <-> serving side <-> endpoint.
    // A stalled reader makes its splice pause the stream; the peer may still send what yamux
    // granted before that, which must fit the stream's read buffer (the default configuration's
    // 16 MiB window did not: StreamBufferError, the transfer cut).
    const [clientStream, serverStream] = await yamuxPairs.pair()
    const peaks = [clientStream, serverStream].map(watchReadBuffer)
    const [listenerSide, app] = await socketPair()
    const [servingSide, endpoint] = await socketPair()
    const local = spliceSocketStream(listenerSide, clientStream)
    const remote = spliceSocketStream(servingSide, serverStream)
    const size = 50 * 1000 * 1000
    const download = patterned(size, 7)
    const upload = patterned(size, 11)
    const gotDown = readSlowly(app, 120_000)
    const gotUp = readSlowly(endpoint, 120_000)
    void writeAll(endpoint, download).then(() => { endpoint.end() })
    void writeAll(app, upload).then(() => { app.end() })
    const [down, up] = await Promise.all([gotDown, gotUp]).catch(async (e: Error) => {
      const [l, r] = await Promise.all([local, remote]) // name the splice's failure, not just the socket's reset
      throw new Error(`${e.message}; listener side: ${l.failure?.error.message}; serving side: ${r.failure?.error.message}`)
    })
    expect(down.length).toBe(size)
    expect(sha256(down)).toBe(sha256(download))
    expect(up.length).toBe(size)
    expect(sha256(up)).toBe(sha256(upload))
    const [l, r] = await Promise.all([local, remote])
    expect(l.failure?.error.message).toBeUndefined()
    expect(r.failure?.error.message).toBeUndefined()
    expect([l.up, l.down, r.up, r.down]).toEqual([size, size, size, size])
    // both streams were paused and buffered (the stalls), never more than one yamux window
    for (const peak of peaks) {
      expect(peak.bytes).toBeGreaterThan(0)
      expect(peak.bytes).toBeLessThanOrEqual(MAX_STREAM_WINDOW_BYTES)
    }
  }, 180_000)

  it('a stream reset before the splice starts: the socket is closed, not left open', async () => {
    const [client, server] = await yamuxPairs.pair()
    server.abort(new Error('remote gave up'))
    await new Promise((resolve) => setTimeout(resolve, 20))
    const [proxySide, app] = await socketPair()
    const ended = new Promise<void>((resolve) => { app.on('error', () => { resolve() }); app.once('end', () => { resolve() }) })
    expect(client.status).toBe('reset')
    await spliceSocketStream(proxySide, client)
    await ended // the application sees its connection end
    expect(proxySide.destroyed).toBe(true)
  })
})

describe('the agent side of a service port', () => {
  const quiet = createLogger({ name: 'test', level: 'silent' })
  /** A TCP server answering every connection with its name, then closing. */
  async function namedServer (name: string): Promise<string> {
    const server = createServer((sock) => { sock.end(`${name}\n`) })
    servers.push(server)
    await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
    return `127.0.0.1:${(server.address() as any).port}`
  }
  /** A tunnel whose peer answers every proxy request with `status` (over real yamux streams). */
  function tunnelAnswering (status: number, asked: string[]): TunnelApi {
    return {
      openStream: async (node: string, _protocol: string, opts?: OpenStreamOptions) => {
        const [outbound, inbound] = await yamuxPairs.pair()
        if (opts?.firstData != null) outbound.send(opts.firstData)
        void readPrefix(inbound, (b) => { const d = decodeRequest(b); return typeof d === 'string' ? d : { value: d.request, length: d.length } }, 1_000).then(({ value }) => {
          asked.push(`${node} ${value.ip}:${value.port}`)
          inbound.send(Uint8Array.of(status)); void inbound.close()
        })
        return outbound
      },
      handle: () => {}
    } as unknown as TunnelApi
  }
  const plan = (direct: string[], remote: Record<string, string>): ServicePortPlan => ({
    id: '10.96.0.10:80/TCP', key: 'shop/web', namespace: 'shop', name: 'web', portName: 'http', clusterIP: '10.96.0.10', port: 80, protocol: 'TCP',
    direct, remote: new Map(Object.entries(remote)), policy: { kind: 'round-robin' }, agentOnly: false, affinitySeconds: 0
  })
  async function get (address: string): Promise<string> {
    const [host, port] = address.split(':')
    const sock = createConnection({ host, port: Number(port) })
    const parts: Buffer[] = []
    sock.on('data', (b) => parts.push(b))
    return await new Promise((resolve, reject) => {
      sock.once('end', () => { resolve(Buffer.concat(parts).toString().trim()) })
      sock.once('error', reject)
    })
  }

  it('a peer refusing its endpoint (its catalog dropped it first): the connection goes to a direct endpoint, not reset', async () => {
    const local = await namedServer('local')
    const asked: string[] = []
    const l = await ServicePortListener.open(plan([local], { '10.2.0.5:8080': 'edge-b1' }), '127.0.0.1', {
      tunnel: tunnelAnswering(ProxyStatus.REFUSED, asked), log: quiet, metrics: new ProxyMetrics(new Metrics()), connectTimeoutMs: 1_000, udpIdleMs: 1_000, udpStreamIdleMs: 1_000
    })
    try {
      expect(await get(l.address)).toBe('local')
      expect(asked).toEqual(['edge-b1 10.2.0.5:8080'])
      expect(await get(l.address)).toBe('local') // the refused endpoint is now skipped for a while
      expect(asked.length).toBe(1)
    } finally { await l.close() }
  })

  it('retiring: a connection the kernel already sent keeps working; new ones are accepted for the grace period only; then it closes', async () => {
    const l = await ServicePortListener.open(plan([], { '10.2.0.5:8080': 'edge-b1' }), '127.0.0.1', {
      tunnel: tunnelEcho(), log: quiet, metrics: new ProxyMetrics(new Metrics()), connectTimeoutMs: 1_000, udpIdleMs: 1_000, udpStreamIdleMs: 1_000
    })
    const [host, port] = l.address.split(':')
    const held = createConnection({ host, port: Number(port) })
    await new Promise((resolve) => held.once('connect', resolve))
    let retired = false
    const retiring = l.retire(300).then(() => { retired = true })
    expect(await echoOnce(held, 'during')).toBe('during')
    await new Promise((resolve) => setTimeout(resolve, 1_500))
    expect(await echoOnce(held, 'after the grace')).toBe('after the grace') // still carried
    expect(retired).toBe(false)
    const refused = await new Promise<string>((resolve) => { const c = createConnection({ host, port: Number(port) }); c.once('error', (e: any) => { resolve(e.code) }); c.once('connect', () => { c.destroy(); resolve('connected') }) })
    expect(refused).toBe('ECONNREFUSED') // no new connections after the grace
    held.end()
    await retiring
    expect(l.connections).toBe(0)
  })
})

/** A tunnel whose peer says OK and echoes the stream back. */
function tunnelEcho (): TunnelApi {
  return {
    openStream: async (_node: string, _protocol: string, opts?: OpenStreamOptions) => {
      const [outbound, inbound] = await yamuxPairs.pair()
      if (opts?.firstData != null) outbound.send(opts.firstData)
      void readPrefix(inbound, (b) => { const d = decodeRequest(b); return typeof d === 'string' ? d : { value: d.request, length: d.length } }, 1_000).then(({ rest }) => {
        inbound.send(Uint8Array.of(ProxyStatus.OK))
        if (rest.length > 0) inbound.send(rest)
        inbound.addEventListener('message', (e: any) => { inbound.send(e.data.subarray()) })
        inbound.addEventListener('remoteCloseWrite', () => { void inbound.close() })
        inbound.resume()
      })
      return outbound
    },
    handle: () => {}
  } as unknown as TunnelApi
}

async function echoOnce (sock: Socket, text: string): Promise<string> {
  return await new Promise((resolve) => {
    sock.once('data', (b) => { resolve(b.toString()) })
    sock.write(text)
  })
}
