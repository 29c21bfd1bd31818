// Hostile HTTP against a running edgemesh-server (/healthz, /metrics) and a running
// edgemesh-agent (metrics listener and control socket), with their production limits: random
// bytes, broken request lines, invalid URLs, huge headers, bad methods, bad header names and
// values, slowloris partial requests, every request split at random points, over many
// connections in parallel. Requests the parser can frame (invalid URLs, no Host, wrong
// methods, unknown paths) are refused on a kept-alive connection, so most connections carry a
// few of those before the one that ends them. Both processes must live
// on, answer /healthz with 200, and count the 400s they sent. The seed is printed
// (EDGEMESH_FUZZ_SEED=<n> replays a run).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, type Socket } from 'node:net'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { stringify } from 'yaml'
import { startProcess, type LabProcess } from '../lab/proc.ts'
import { AGENT_BIN, AGENT_NODE_FLAGS, metricValue, NODE_FLAGS, SERVER_BIN } from '../lab/mesh.ts'
import { freePort } from '../lab/ports.ts'

const execFileP = promisify(execFile)
const NODE = process.execPath
const ISSUE_REQUEST = 'GET //[ HTTP/1.1\r\nHost: x\r\n\r\n'
const TOTAL_REQUESTS = 100_000
const SLOWLORIS_PER_TARGET = 100
const WORKERS = { relay: 40, agentMetrics: 40, control: 12 }

type TargetName = keyof typeof WORKERS
type Target = { port: number } | { path: string }

/** The JSON fields of a process's ready log line (pino: one JSON object per line). */
async function readyLine (p: LabProcess, re: RegExp): Promise<Record<string, any>> {
  return JSON.parse(await p.waitForLine(re, 20_000)) as Record<string, any>
}
const portOf = (hostPort: string): number => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1))

// ---- seeded generator ---------------------------------------------------------------------

function rng (seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    return s / 0x1_0000_0000
  }
}

class Gen {
  readonly next: () => number
  constructor (next: () => number) { this.next = next }
  int (n: number): number { return Math.floor(this.next() * n) }
  pick<T> (xs: readonly T[]): T { return xs[this.int(xs.length)]! }
  bytes (n: number): Buffer { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = this.int(256); return b }
  text (n: number, alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789-_./%?=&'): string {
    let s = ''
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)]
    return s
  }

  /** 1-4 pieces cut at random points. */
  split (b: Buffer): Buffer[] {
    const cuts = [...new Set(Array.from({ length: this.int(4) }, () => this.int(b.length + 1)))].sort((x, y) => x - y)
    const out: Buffer[] = []
    let at = 0
    for (const c of cuts) { out.push(b.subarray(at, c)); at = c }
    out.push(b.subarray(at))
    return out.filter((p) => p.length > 0)
  }
}

/** A request as sent; malformed: not a well-formed request for some path (400, 408, 431 or a closed connection). */
interface Sent { bytes: Buffer, kind: string, malformed: boolean }

const KNOWN = ['/healthz', '/metrics']
const INVALID_URLS = ['//[', '//[::1', 'http://[/', '//%zz/', 'http://a b/', '//x:99999/', '//u@[/', 'http://[::1', '//[1.2.3.4]/', 'https://%/']

/** An invalid URL: the issue's `//[` and relatives new URL() refuses. */
function invalidUrl (g: Gen): string {
  return g.int(2) === 0 ? g.pick(INVALID_URLS) : `${g.pick(['//[', 'http://[', '//%', '//x:', 'http://a%'])}${g.text(g.int(20), 'abc:[]%@0123456789')}${g.pick(['', '/', '/healthz'])}`
}

/** A request the parser frames, so the listener refuses it (400, 404, 405) and keeps the connection. */
function keepAliveRequest (g: Gen): Sent {
  const k = g.int(10)
  const tail = 'Host: x\r\n' + (g.int(3) === 0 ? `X-${g.text(5)}: ${g.text(g.int(40))}\r\n` : '')
  const req = (kind: string, s: string, malformed = false): Sent => ({ bytes: Buffer.from(s), kind, malformed })
  if (k < 4) return req('invalid-url', `GET ${invalidUrl(g)} HTTP/1.1\r\n${tail}\r\n`, true)
  if (k === 4) return req('no-host', `GET ${g.pick(KNOWN)} HTTP/1.1\r\n\r\n`, true)
  if (k === 5) return req('wrong-method', `${g.pick(['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'])} ${g.pick(KNOWN)} HTTP/1.1\r\n${tail}\r\n`)
  if (k === 6) return req('unknown-path', `POST /${g.text(8)} HTTP/1.1\r\n${tail}Content-Length: 5\r\n\r\nhello`)
  if (k === 7) return req('unknown-path', `GET /${g.text(g.int(60))} HTTP/1.1\r\n${tail}\r\n`)
  if (k === 8) return req('odd-path', `GET ${g.pick(['http://x/', '/%', '/%%', '/..%2f..%2f', '/\u00e9', '/healthz/'])}${g.text(g.int(10))} HTTP/1.1\r\n${tail}\r\n`)
  return req('junk-query', `GET /healthz?${g.text(g.int(80))} HTTP/1.1\r\n${tail}\r\n`)
}

/** A request the listener refuses and closes the connection after. */
function hostileRequest (g: Gen): Sent {
  const kind = g.pick(['random-bytes', 'request-line', 'invalid-url', 'huge-headers', 'bad-method', 'bad-header', 'issue-line'] as const)
  let s: string
  switch (kind) {
    case 'random-bytes': return { bytes: g.bytes(1 + g.int(2000)), kind, malformed: true }
    case 'issue-line': return { bytes: Buffer.from(ISSUE_REQUEST), kind, malformed: true }
    case 'request-line':
      s = g.pick([
        'GET\r\n\r\n', 'GET /\r\n\r\n', 'GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n', 'GET / FOO/1.1\r\nHost: x\r\n\r\n',
        'GET / HTTP/1.x\r\nHost: x\r\n\r\n', ' / HTTP/1.1\r\nHost: x\r\n\r\n', 'GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n',
        'GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n', 'GET / HTTP/1.1\r\r\nHost: x\r\n\r\n', 'GET / HTTP/1.1\nHost: x\n\n',
        `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 'GET / HTTP/1.1\r\n\r\n', `GET /${g.text(20, ' \t"<>{}|\\^`')} HTTP/1.1\r\nHost: x\r\n\r\n`
      ])
      break
    case 'invalid-url': s = `GET ${g.pick(INVALID_URLS)} HTTP/1.1\r\nHost: x\r\n\r\n`; break
    case 'huge-headers':
      s = g.int(2) === 0
        ? `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(17_000 + g.int(50_000))}\r\n\r\n`
        : `GET /healthz HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 700 + g.int(800) }, (_, i) => `X-H${i}: ${g.text(20)}\r\n`).join('')}\r\n`
      break
    case 'bad-method': s = `${g.pick(['FOO', 'get', 'G3T', 'GETT', 'PRI', 'BREW', 'GET\x00', '\x01\x02'])} /healthz HTTP/1.1\r\nHost: x\r\n\r\n`; break
    case 'bad-header':
      s = `GET /healthz HTTP/1.1\r\nHost: x\r\n${g.pick([
        'Bad Name: v', ': v', 'X-\x7f: v', 'X: a\x00b', 'X: a\x01b', 'NoColon', 'Content-Length: abc', 'Content-Length: 1\r\nContent-Length: 2',
        'Transfer-Encoding: chunked\r\nContent-Length: 3', ' folded: v', 'X\r: v', `${g.text(8, '()<>@,;\\"/[]?={}')}: v`
      ])}\r\n\r\n`
      break
  }
  return { bytes: Buffer.from(s, 'latin1'), kind, malformed: true }
}

// ---- driver -------------------------------------------------------------------------------

interface Tally { sent: number, malformed: number, kinds: Map<string, number>, statuses: Map<number, number>, connections: number, stuck: number, slowlorisClosed: number, slowloris408: number }
const newTally = (): Tally => ({ sent: 0, malformed: 0, kinds: new Map(), statuses: new Map(), connections: 0, stuck: 0, slowlorisClosed: 0, slowloris408: 0 })
const count = (t: Tally, status: number): void => { t.statuses.set(status, (t.statuses.get(status) ?? 0) + 1) }

function dial (target: Target): Socket {
  return 'path' in target ? connect(target.path) : connect(target.port, '127.0.0.1')
}

/**
 * One connection: some requests the listener keeps the connection for, each sent after the
 * previous answer (or all at once, pipelined), then usually one hostile request and a
 * half-close. Every request is written in pieces cut at random points.
 */
async function session (g: Gen, target: Target, tally: Tally): Promise<void> {
  const requests = Array.from({ length: g.int(8) }, () => keepAliveRequest(g))
  if (g.int(20) > 0) requests.push(hostileRequest(g))
  const sent = (r: Sent): void => {
    tally.sent++
    if (r.malformed) tally.malformed++
    tally.kinds.set(r.kind, (tally.kinds.get(r.kind) ?? 0) + 1)
  }
  const pipelined = g.int(5) === 0
  const s = dial(target)
  tally.connections++
  let text = ''
  let seen = 0
  let onStatus: (() => void) | undefined
  const closed = new Promise<void>((resolve) => {
    s.on('close', () => { resolve() })
  })
  s.on('error', () => {})
  s.on('data', (d: Buffer) => {
    text += d.toString('latin1')
    const matches = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)]
    for (const m of matches) count(tally, Number(m[1]))
    seen += matches.length
    // keep only what may hold the start of the next status line
    text = text.slice(matches.length > 0 ? matches.at(-1)!.index + 12 : Math.max(0, text.length - 12))
    onStatus?.()
  })
  const guard = setTimeout(() => { tally.stuck++; s.destroy() }, 30_000)
  const write = async (b: Buffer): Promise<void> => {
    for (const piece of g.split(b)) {
      if (s.destroyed) return
      s.write(piece)
      if (g.int(3) === 0) await new Promise((resolve) => setImmediate(resolve))
    }
  }
  try {
    if (pipelined) {
      await write(Buffer.concat(requests.map((r) => r.bytes)))
      requests.forEach(sent)
      s.end()
    } else {
      for (const [i, r] of requests.entries()) {
        if (s.destroyed) break
        const answered = new Promise<void>((resolve) => {
          onStatus = () => { if (seen > i) resolve() }
          void closed.then(resolve)
        })
        await write(r.bytes)
        sent(r)
        if (i === requests.length - 1) s.end()
        await answered
      }
      if (requests.length === 0) s.end()
    }
    await closed
  } finally {
    clearTimeout(guard)
  }
}

/** A request that stops halfway and waits: the listener must answer 408 and close. */
async function slowloris (g: Gen, target: Target, tally: Tally): Promise<void> {
  const partial = g.pick(['GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ', 'GET /heal', 'GET /healthz HTTP/1.1\r\nHost: x\r\n', ''])
  const s = dial(target)
  let text = ''
  s.on('error', () => {})
  s.on('data', (d: Buffer) => { text += d.toString('latin1') })
  tally.sent++
  tally.malformed++
  tally.kinds.set('slowloris', (tally.kinds.get('slowloris') ?? 0) + 1)
  tally.connections++
  const guard = setTimeout(() => { tally.stuck++; s.destroy() }, 60_000)
  if (partial !== '') s.write(partial)
  await new Promise<void>((resolve) => { s.on('close', () => { resolve() }) })
  clearTimeout(guard)
  tally.slowlorisClosed++
  if (text.startsWith('HTTP/1.1 408 ')) tally.slowloris408++
}

/** One request; reads to the server's close (`Connection: close`), or only the status line. */
async function exchange (target: Target, request: string, statusOnly = false): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const s = dial(target)
    let text = ''
    const guard = setTimeout(() => { s.destroy(); reject(new Error(`no answer to ${JSON.stringify(request)}`)) }, 20_000)
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1')
      if (statusOnly && text.includes('\r\n')) s.destroy()
    })
    s.on('error', reject)
    s.on('close', () => {
      clearTimeout(guard)
      const m = /^HTTP\/1\.1 (\d{3}) /.exec(text)
      if (m == null) { reject(new Error(`no HTTP answer: ${JSON.stringify(text.slice(0, 100))}`)); return }
      resolve({ status: Number(m[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) })
    })
    s.write(request)
  })
}

const healthz = async (t: Target): Promise<number> => (await exchange(t, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).status
const metricsOf = async (t: Target): Promise<string> => (await exchange(t, 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).body

// ---- the running relay and agent ----------------------------------------------------------

let dir: string
let relay: LabProcess | undefined
let agent: LabProcess | undefined
const targets = {} as Record<TargetName, Target>

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-http-fuzz-'))
  // Port 0 wherever a process can report what it bound (the relay's UDP and HTTP, the agent's
  // metrics and ports), so no port is picked here and handed over for another process on the
  // host to take meanwhile. The relay's TCP port is announced in circuit reservations, so it
  // must be a real number: should another process take it first, the relay refuses to start
  // ("listen.tcpPort: address already in use") and is started again on another.
  let relayPorts = { tcpPort: 0, udpPort: 0, http: 0 }
  let relayId = ''
  for (let attempt = 1; ; attempt++) {
    const tcpPort = await freePort('tcp')
    await writeFile(join(dir, 'relay.yaml'), stringify({
      identityFile: join(dir, 'relay.key'),
      listen: { host: '127.0.0.1', tcpPort, udpPort: 0, http: '127.0.0.1:0' },
      announce: ['127.0.0.1'],
      logLevel: 'info'
    }))
    relayId = (await execFileP(NODE, [SERVER_BIN, '--config', join(dir, 'relay.yaml'), '--print-peer-id'])).stdout.trim()
    relay = startProcess([NODE, ...NODE_FLAGS, SERVER_BIN, '--config', join(dir, 'relay.yaml')], { logFile: join(dir, 'relay.log') })
    try {
      const ready = await readyLine(relay, /edgemesh-server ready/)
      relayPorts = { tcpPort, udpPort: portOf(ready.udp), http: portOf(ready.http) }
      break
    } catch (err) {
      if (attempt === 3 || !/address already in use/.test(relay.stderr() + relay.stdout())) throw err
    }
  }
  for (const p of Object.values(relayPorts)) expect(p).toBeGreaterThan(0)

  const controlSocket = join(dir, 'agent.sock')
  await writeFile(join(dir, 'agent.yaml'), stringify({
    nodeName: 'fuzz-a1',
    identityFile: join(dir, 'agent.key'),
    listen: { host: '127.0.0.1', udpPort: 0, tcpPort: 0 },
    controlSocket,
    metrics: '127.0.0.1:0',
    relays: [{ host: '127.0.0.1', peerId: relayId, tcpPort: relayPorts.tcpPort, udpPort: relayPorts.udpPort }],
    diagnostics: false,
    logLevel: 'info'
  }))
  agent = startProcess([NODE, ...AGENT_NODE_FLAGS, AGENT_BIN, '--config', join(dir, 'agent.yaml')], { logFile: join(dir, 'agent.log') })
  const metricsPort = portOf((await readyLine(agent, /edgemesh-agent ready/)).metrics)
  expect(metricsPort).toBeGreaterThan(0)

  targets.relay = { port: relayPorts.http }
  targets.agentMetrics = { port: metricsPort }
  targets.control = { path: controlSocket }
}, 60_000)

afterAll(async () => {
  await agent?.kill('SIGTERM')
  await relay?.kill('SIGTERM')
  if (dir != null && process.env.EDGEMESH_KEEP_LOGS == null) await rm(dir, { recursive: true, force: true })
})

describe('HTTP listeners under hostile input', () => {
  it('the issue\'s one-line request gets 400 from each listener, which keeps serving', async () => {
    for (const name of Object.keys(WORKERS) as TargetName[]) {
      expect((await exchange(targets[name], ISSUE_REQUEST, true)).status, name).toBe(400)
      expect(await healthz(targets[name]), name).toBe(200)
    }
    expect(metricValue(await metricsOf(targets.relay), 'edgemesh_http_rejected_requests_total', 'reason="bad-url"')).toBe(1)
    expect(metricValue(await metricsOf(targets.agentMetrics), 'edgemesh_http_rejected_requests_total', 'reason="bad-url"')).toBe(2)
  })

  it(`${TOTAL_REQUESTS} hostile requests: both processes live on, answer /healthz, and count their 400s`, async () => {
    const seed = Number(process.env.EDGEMESH_FUZZ_SEED ?? Math.floor(Math.random() * 0x7fff_ffff))
    console.log(`http fuzz seed ${seed} (EDGEMESH_FUZZ_SEED=${seed} replays it)`)
    const g = new Gen(rng(seed))
    const before = {
      relay: metricValue(await metricsOf(targets.relay), 'edgemesh_http_rejected_requests_total'),
      agent: metricValue(await metricsOf(targets.agentMetrics), 'edgemesh_http_rejected_requests_total')
    }
    const tallies: Record<TargetName, Tally> = { relay: newTally(), agentMetrics: newTally(), control: newTally() }
    const started = Date.now()
    // slowloris connections stay open until the listener's headers timeout (10 s) cuts them
    const slow = (Object.keys(WORKERS) as TargetName[]).flatMap((name) =>
      Array.from({ length: name === 'control' ? SLOWLORIS_PER_TARGET / 4 : SLOWLORIS_PER_TARGET }, async () => { await slowloris(g, targets[name], tallies[name]) }))
    const sent = (): number => Object.values(tallies).reduce((n, t) => n + t.sent, 0)
    const workers = (Object.entries(WORKERS) as Array<[TargetName, number]>).flatMap(([name, n]) =>
      Array.from({ length: n }, async () => {
        while (sent() < TOTAL_REQUESTS) await session(g, targets[name], tallies[name])
      }))
    await Promise.all(workers)
    const sendSeconds = (Date.now() - started) / 1000
    await Promise.all(slow)
    const seconds = (Date.now() - started) / 1000

    const total = sent()
    const statuses = (t: Tally, s: number): number => t.statuses.get(s) ?? 0
    const client400 = { relay: statuses(tallies.relay, 400), agent: statuses(tallies.agentMetrics, 400) + statuses(tallies.control, 400) }
    const relayMetrics = await metricsOf(targets.relay)
    const agentMetrics = await metricsOf(targets.agentMetrics)
    const server400 = (text: string): number => ['malformed', 'bad-url', 'missing-host'].reduce((n, r) => n + metricValue(text, 'edgemesh_http_rejected_requests_total', `reason="${r}"`), 0)
    const report = Object.fromEntries(Object.entries(tallies).map(([name, t]) => [name, { sent: t.sent, malformed: t.malformed, connections: t.connections, stuck: t.stuck, slowloris408: `${t.slowloris408}/${t.slowlorisClosed}`, statuses: Object.fromEntries([...t.statuses].sort((a, b) => a[0] - b[0])), kinds: Object.fromEntries([...t.kinds].sort()) }]))
    console.log(JSON.stringify({
      seed,
      requests: total,
      malformed: Object.values(tallies).reduce((n, t) => n + t.malformed, 0),
      seconds,
      requestsPerSecond: Math.round(total / sendSeconds),
      client400,
      server400: { relay: server400(relayMetrics), agent: server400(agentMetrics) },
      serverRejected: { relay: metricValue(relayMetrics, 'edgemesh_http_rejected_requests_total') - before.relay, agent: metricValue(agentMetrics, 'edgemesh_http_rejected_requests_total') - before.agent },
      targets: report
    }, null, 2))

    expect(total).toBeGreaterThanOrEqual(TOTAL_REQUESTS)
    expect(relay!.child.exitCode).toBeNull()
    expect(agent!.child.exitCode).toBeNull()
    for (const name of Object.keys(WORKERS) as TargetName[]) expect(await healthz(targets[name]), name).toBe(200)
    // every 400 a client saw was counted by the process that sent it (the processes may count
    // more: a refusal whose client had already gone)
    expect(client400.relay).toBeGreaterThan(total / 20)
    expect(client400.agent).toBeGreaterThan(total / 20)
    expect(server400(relayMetrics)).toBeGreaterThanOrEqual(client400.relay)
    expect(server400(agentMetrics)).toBeGreaterThanOrEqual(client400.agent)
    expect(metricValue(relayMetrics, 'edgemesh_http_rejected_requests_total', 'reason="headers-too-large"')).toBeGreaterThan(0)
    expect(metricValue(relayMetrics, 'edgemesh_http_rejected_requests_total', 'reason="method-not-allowed"')).toBeGreaterThan(0)
    for (const t of Object.values(tallies)) {
      expect(t.stuck).toBe(0)
      // the slowloris connections were cut by the listener, with a 408
      expect(t.slowloris408).toBe(t.slowlorisClosed)
    }
    expect(metricValue(relayMetrics, 'edgemesh_http_rejected_requests_total', 'reason="timeout"')).toBeGreaterThanOrEqual(SLOWLORIS_PER_TARGET)
    // nothing from outside the listener's vocabulary, and no server errors
    for (const t of Object.values(tallies)) for (const s of t.statuses.keys()) expect([200, 400, 404, 405, 408, 431]).toContain(s)
    for (const p of [relay!, agent!]) expect(p.stdout() + p.stderr()).not.toMatch(/ERR_INVALID_URL|unhandled|uncaught/i)
  }, 170_000)
})
