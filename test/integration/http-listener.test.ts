// The HTTP listener behind the relay's /healthz + /metrics, the agent's metrics and the control
// socket, on real loopback and unix sockets: malformed input is answered with an error and
// counted, slow or oversized requests are cut off, and the listener keeps serving.
import { afterEach, describe, expect, it } from 'vitest'
import { connect, type Socket } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Server } from 'node:http'
import fc from 'fast-check'
import { startHttp, stopHttp, type HttpLimits, type Route } from '../../shared/http.ts'
import { Metrics } from '../../shared/metrics.ts'
import { eventually } from '../lab/wait.ts'

const servers: Server[] = []
const dirs: string[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map(stopHttp))
  await Promise.all(dirs.splice(0).map(async (d) => { await rm(d, { recursive: true, force: true }) }))
})

const routes: Record<string, Route> = {
  'GET /healthz': async () => ({ body: { status: 'ok' } }),
  'GET /param': async () => { throw Object.assign(new Error('missing query parameter "node"'), { status: 400 }) },
  'GET /async-fail': async () => { throw new Error('async failure') },
  'GET /sync-fail': (() => { throw new Error('sync failure') }) as unknown as Route,
  'GET /events': async () => ({
    stream: (res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      let n = 0
      const timer = setInterval(() => { res.write(`{"n":${n++}}\n`) }, 50)
      res.on('close', () => { clearInterval(timer) })
    }
  })
}

interface Listener { target: { port: number, host: string } | { path: string }, metrics: Metrics, errors: unknown[] }

async function listen (limits: HttpLimits = {}, unix = false): Promise<Listener> {
  const metrics = new Metrics({ processMetrics: false })
  const errors: unknown[] = []
  let where: { socketPath: string } | { host: string, port: number } = { host: '127.0.0.1', port: 0 }
  if (unix) {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-http-'))
    dirs.push(dir)
    where = { socketPath: join(dir, 'control.sock') }
  }
  const server = await startHttp(where, routes, (err) => { errors.push(err) }, { metrics, ...limits })
  servers.push(server)
  const address = server.address()
  const target = typeof address === 'string' ? { path: address } : { host: '127.0.0.1', port: address!.port }
  return { target, metrics, errors }
}

function open (l: Listener): Socket {
  return 'path' in l.target ? connect(l.target.path) : connect(l.target.port, l.target.host)
}

/** Sends the chunks, then reads until the server closes the connection (or `end` after the answers arrive). */
async function exchange (l: Listener, chunks: Array<string | Buffer>, opts: { endAfter?: number } = {}): Promise<{ text: string, statuses: number[] }> {
  return await new Promise((resolve, reject) => {
    const s = open(l)
    let text = ''
    const statuses = (): number[] => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]))
    const guard = setTimeout(() => { s.destroy(); reject(new Error(`no close; got ${JSON.stringify(text.slice(0, 200))}`)) }, 30_000)
    s.on('data', (d) => {
      text += d.toString('latin1')
      if (opts.endAfter != null && statuses().length >= opts.endAfter) s.end()
    })
    s.on('error', () => {})
    s.on('close', () => { clearTimeout(guard); resolve({ text, statuses: statuses() }) })
    for (const c of chunks) s.write(c)
  })
}

async function healthz (l: Listener): Promise<number[]> {
  return (await exchange(l, ['GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'])).statuses
}

async function rejected (m: Metrics, reason: string): Promise<number> {
  return (await m.httpRejected.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0
}

describe('HTTP listener', () => {
  it('answers the issue\'s one-line request with 400 and keeps serving', async () => {
    const l = await listen()
    const { statuses } = await exchange(l, ['GET //[ HTTP/1.1\r\nHost: x\r\n\r\n'], { endAfter: 1 })
    expect(statuses).toEqual([400])
    expect(await rejected(l.metrics, 'bad-url')).toBe(1)
    // the request was framed: the connection stays usable
    expect((await exchange(l, ['GET //[ HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'], { endAfter: 2 })).statuses).toEqual([400, 200])
    expect(await healthz(l)).toEqual([200])
  })

  it('refuses malformed request lines, methods, headers and a missing Host with 400; wrong method 405; unknown path 404', async () => {
    const l = await listen()
    const bad = [
      'FOO BAR BAZ\r\n\r\n',
      'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n',
      'G\x00T /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n',
      'GET /healthz HTTP/1.1\r\n\r\n',
      '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03'
    ]
    for (const req of bad) expect((await exchange(l, [req], { endAfter: 1 })).statuses, JSON.stringify(req)).toEqual([400])
    expect((await exchange(l, ['DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n'], { endAfter: 1 })).statuses).toEqual([405])
    expect((await exchange(l, ['GET /nope HTTP/1.1\r\nHost: x\r\n\r\n'], { endAfter: 1 })).statuses).toEqual([404])
    expect(await rejected(l.metrics, 'malformed')).toBe(6)
    expect(await rejected(l.metrics, 'missing-host')).toBe(1)
    expect(await rejected(l.metrics, 'method-not-allowed')).toBe(1)
    expect(await rejected(l.metrics, 'not-found')).toBe(1)
    expect(await healthz(l)).toEqual([200])
  })

  it('answers oversized headers with 431', async () => {
    const l = await listen()
    const { statuses } = await exchange(l, [`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`])
    expect(statuses).toEqual([431])
    expect(await rejected(l.metrics, 'headers-too-large')).toBe(1)
    expect(await healthz(l)).toEqual([200])
  })

  it('closes a slowloris request after the headers timeout', async () => {
    const l = await listen({ headersTimeoutMs: 300, requestTimeoutMs: 600, timeoutCheckIntervalMs: 50 })
    const started = Date.now()
    const { statuses } = await exchange(l, ['GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a'])
    expect(statuses).toEqual([408])
    expect(Date.now() - started).toBeLessThan(25_000)
    // a connection that never sends a byte is cut the same way
    expect((await exchange(l, [])).statuses).toEqual([408])
    expect(await rejected(l.metrics, 'timeout')).toBe(2)
    expect(await healthz(l)).toEqual([200])
  })

  it('honours a status carried by a route\'s error; other throws (sync or async) are 500 and reported', async () => {
    const l = await listen()
    const param = await exchange(l, ['GET /param HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'])
    expect(param.statuses).toEqual([400])
    expect(param.text).toContain('missing query parameter')
    expect((await exchange(l, ['GET /async-fail HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'])).statuses).toEqual([500])
    expect((await exchange(l, ['GET /sync-fail HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'])).statuses).toEqual([500])
    expect(l.errors.map((e) => (e as Error).message)).toEqual(['async failure', 'sync failure'])
    expect(await rejected(l.metrics, 'bad-parameter')).toBe(1)
    expect(await rejected(l.metrics, 'handler-error')).toBe(2)
    expect(await healthz(l)).toEqual([200])
  })

  it('answers a request pipelined behind a good one after the good answer', async () => {
    const l = await listen()
    const { statuses } = await exchange(l, ['GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n'])
    expect(statuses).toEqual([200, 400])
  })

  it('keeps a streaming answer open past the request timeout', async () => {
    const l = await listen({ headersTimeoutMs: 100, requestTimeoutMs: 200, keepAliveTimeoutMs: 100, idleTimeoutMs: 200, timeoutCheckIntervalMs: 20 }, true)
    const s = open(l)
    let text = ''
    let closed = false
    s.on('data', (d) => { text += d.toString() })
    s.on('close', () => { closed = true })
    s.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n')
    // 20 lines at 50 ms: well past every timeout above
    await eventually(async () => { if (!text.includes('{"n":20}')) throw new Error('waiting for events') }, 30_000, 50)
    expect(closed).toBe(false)
    expect(text).toMatch(/^HTTP\/1\.1 200 /)
    s.destroy()
  })

  it('closes connections beyond maxConnections at once and counts them', async () => {
    const l = await listen({ maxConnections: 2 })
    const held = [open(l), open(l)]
    await Promise.all(held.map(async (s) => { await new Promise((resolve) => s.once('connect', resolve)) }))
    await eventually(async () => {
      const { text } = await exchange(l, ['GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'])
      expect(text).toBe('')
    }, 10_000)
    expect(await rejected(l.metrics, 'connection-limit')).toBeGreaterThanOrEqual(1)
    for (const s of held) s.destroy()
    await eventually(async () => { expect(await healthz(l)).toEqual([200]) }, 10_000)
  })

  it('one remote address gets at most maxConnectionsPerAddress; another address is still served', async () => {
    const l = await listen({ maxConnectionsPerAddress: 2 })
    if ('path' in l.target) throw new Error('tcp listener expected')
    const { port } = l.target
    // the listener is on 127.0.0.1; the held connections come from 127.0.0.2 (all of 127/8 is loopback)
    const fromOther = (): Socket => connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' })
    const held = [fromOther(), fromOther()]
    await Promise.all(held.map(async (s) => { await new Promise((resolve) => s.once('connect', resolve)) }))
    // a third from the same address is closed at once, unanswered
    const third = await new Promise<string>((resolve) => {
      const s = fromOther()
      let text = ''
      s.on('data', (d) => { text += d.toString() })
      s.on('error', () => {})
      s.on('connect', () => { s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n') })
      s.on('close', () => { resolve(text) })
    })
    expect(third).toBe('')
    expect(await rejected(l.metrics, 'connection-limit')).toBe(1)
    // 127.0.0.1 is another address: served while 127.0.0.2 holds its two
    expect(await healthz(l)).toEqual([200])
    for (const s of held) s.destroy()
    await eventually(async () => {
      const s = fromOther()
      const text = await new Promise<string>((resolve) => {
        let t = ''
        s.on('data', (d) => { t += d.toString(); if (t.includes('\r\n\r\n')) s.end() })
        s.on('error', () => {})
        s.on('connect', () => { s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n') })
        s.on('close', () => { resolve(t) })
      })
      expect(text).toMatch(/^HTTP\/1\.1 200 /)
    }, 10_000)
  })

  it('serves the same way on a unix socket (the control API)', async () => {
    const l = await listen({}, true)
    expect((await exchange(l, ['GET //[ HTTP/1.1\r\nHost: x\r\n\r\n'], { endAfter: 1 })).statuses).toEqual([400])
    expect(await healthz(l)).toEqual([200])
  })

  it('fuzz: any bytes, split anywhere, get at most error answers and the listener keeps serving', async () => {
    const l = await listen({ headersTimeoutMs: 500, requestTimeoutMs: 1000, keepAliveTimeoutMs: 200, timeoutCheckIntervalMs: 50 })
    const line = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
      fc.string({ maxLength: 80 }).map((s) => Buffer.from(`GET ${s} HTTP/1.1\r\nHost: x\r\n\r\n`)),
      fc.tuple(fc.string({ maxLength: 20 }), fc.string({ maxLength: 40 })).map(([n, v]) => Buffer.from(`GET /healthz HTTP/1.1\r\nHost: x\r\n${n}: ${v}\r\n\r\n`))
    )
    await fc.assert(fc.asyncProperty(line, fc.nat(), async (bytes, cut) => {
      const at = bytes.length === 0 ? 0 : cut % bytes.length
      const { statuses } = await exchange(l, [bytes.subarray(0, at), bytes.subarray(at)], { endAfter: 1 })
      for (const st of statuses) expect([200, 400, 404, 405, 408, 431]).toContain(st)
    }), { numRuns: 150 })
    expect(await healthz(l)).toEqual([200])
  })
})
