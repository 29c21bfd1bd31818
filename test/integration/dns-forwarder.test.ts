// The forwarder against a real resolver (dnsmasq on loopback): cached answers count their TTLs
// down, identical queries in flight share one upstream query, a dead upstream is skipped for
// the next, and with every upstream down the answer is SERVFAIL at once. "At once" and "skipped"
// are asserted on state (what the dead upstream received, whether its timeout had fired when the
// answer came), never on milliseconds.
import { createSocket, type Socket } from 'node:dgram'
import { createServer } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pino from 'pino'
import { Forwarder } from '../../agent/dns/upstream.ts'
import { decodeMessage, encodeQuery, parseQuery, Query, RCODE, TYPE } from '../../agent/dns/wire.ts'
import { startProcess, type LabProcess } from '../lab/proc.ts'

const log = pino({ level: 'silent' })
let dnsmasq: LabProcess
let port = 0
let dead = 0

async function freeUdpPort (): Promise<number> {
  return await new Promise((resolve) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => { resolve(p) }) })
  })
}

function query (name: string, id: number): Query {
  const q = new Query()
  const parsed = parseQuery(encodeQuery({ id, name, type: TYPE.A, rd: true }), q)
  if (parsed !== q) throw new Error('bad query')
  return q
}

async function ask (f: Forwarder, name: string, id = 1): Promise<ReturnType<typeof decodeMessage>> {
  return await new Promise((resolve) => { f.forward(query(name, id), (bytes) => { resolve(decodeMessage(bytes)) }) })
}

// Like ask, and also how many upstream timeouts had fired when the answer arrived.
async function askNoting (f: Forwarder, name: string): Promise<{ answer: ReturnType<typeof decodeMessage>, timeoutsAtAnswer: number }> {
  return await new Promise((resolve) => {
    f.forward(query(name, 1), (bytes) => { resolve({ answer: decodeMessage(bytes), timeoutsAtAnswer: f.stats.upstreamTimeouts }) })
  })
}

// A dead upstream that reads every query and never answers, listing the names it was asked.
// received() first sends a sentinel and waits for it, so every query sent before it is counted.
async function blackhole (): Promise<{ port: number, received: () => Promise<string[]>, close: () => void }> {
  const sock: Socket = createSocket('udp4')
  const names: string[] = []
  const waiters: Array<() => void> = []
  sock.on('message', (msg) => {
    const name = decodeMessage(msg)?.questions[0]?.name ?? '?'
    if (name === 'sentinel.invalid') { waiters.shift()?.(); return }
    names.push(name)
  })
  await new Promise<void>((resolve) => { sock.bind(0, '127.0.0.1', resolve) })
  const port = sock.address().port
  return {
    port,
    received: async () => {
      const arrived = new Promise<void>((resolve) => { waiters.push(resolve) })
      sock.send(encodeQuery({ id: 0, name: 'sentinel.invalid', type: TYPE.A }), port, '127.0.0.1')
      await arrived
      return [...names]
    },
    close: () => { sock.close() }
  }
}

beforeAll(async () => {
  port = await freeUdpPort()
  dead = await freeUdpPort() // nothing listens here
  dnsmasq = startProcess(['dnsmasq', '--no-daemon', '--no-resolv', '--no-hosts', '--listen-address=127.0.0.1', '--bind-interfaces', `--port=${port}`,
    '--address=/example.org/203.0.113.7', '--local-ttl=30', '--log-queries', '--log-facility=-'])
  await dnsmasq.waitForLine(/started, version/, 10_000)
})
afterAll(async () => { await dnsmasq?.kill() })

describe('Forwarder with a real upstream', () => {
  it('caches answers and serves them with their TTL counted down', async () => {
    const f = new Forwarder({ upstreams: [{ host: '127.0.0.1', port }], log })
    await f.start()
    try {
      const first = await ask(f, 'ttl.example.org', 11)
      expect([first?.id, first?.rcode, first?.answers.map((a) => [a.data, a.ttl])]).toEqual([11, RCODE.NOERROR, [['203.0.113.7', 30]]])
      await new Promise((resolve) => setTimeout(resolve, 2100))
      const again = await ask(f, 'TTL.example.org', 12)
      expect(again?.id).toBe(12)
      expect(again?.answers[0]?.ttl).toBeLessThanOrEqual(28)
      expect(f.stats.cacheHits).toBe(1)
    } finally { f.stop() }
  })

  it('sends one upstream query for identical queries in flight', async () => {
    const f = new Forwarder({ upstreams: [{ host: '127.0.0.1', port }], log })
    await f.start()
    try {
      const before = (dnsmasq.stdout() + dnsmasq.stderr()).split('\n').filter((l) => l.includes('query[A] same.example.org')).length
      const answers = await Promise.all([1, 2, 3, 4, 5].map(async (id) => await ask(f, 'same.example.org', id)))
      expect(answers.map((a) => [a?.id, a?.answers[0]?.data])).toEqual([1, 2, 3, 4, 5].map((id) => [id, '203.0.113.7']))
      // dnsmasq logs queries in order: once a later query's line is in, every line before it is
      expect((await ask(f, 'after-same.example.org', 6))?.answers[0]?.data).toBe('203.0.113.7')
      await dnsmasq.waitForLine(/query\[A\] after-same\.example\.org/)
      const after = (dnsmasq.stdout() + dnsmasq.stderr()).split('\n').filter((l) => l.includes('query[A] same.example.org')).length
      expect(after - before).toBe(1)
    } finally { f.stop() }
  })

  it('fails over from a dead upstream, and answers SERVFAIL at once while all are down', async () => {
    const hole = await blackhole()
    const f = new Forwarder({ upstreams: [{ host: '127.0.0.1', port: hole.port }, { host: '127.0.0.1', port }], timeoutMs: 200, log })
    await f.start()
    try {
      const a = await askNoting(f, 'failover.example.org')
      expect(a.answer?.answers[0]?.data).toBe('203.0.113.7')
      expect(a.timeoutsAtAnswer).toBe(1) // asked the dead one first and waited for its timeout, once
      const b = await askNoting(f, 'next.example.org')
      expect(b.answer?.answers[0]?.data).toBe('203.0.113.7')
      expect(b.timeoutsAtAnswer).toBe(1) // no second wait: the dead one is skipped now
      expect(await hole.received()).toEqual(['failover.example.org'])
    } finally { f.stop() }

    const g = new Forwarder({ upstreams: [{ host: '127.0.0.1', port: hole.port }], timeoutMs: 1_000, log })
    await g.start()
    try {
      const first = await askNoting(g, 'a.example.org')
      expect([first.answer?.rcode, first.timeoutsAtAnswer]).toEqual([RCODE.SERVFAIL, 1]) // found out by waiting
      // Now every upstream is down: each answer comes before the 1 s upstream timeout of its query
      // could fire (the first goes on upstream as the once-a-second probe).
      const probe = await askNoting(g, 'b.example.org')
      const next = await askNoting(g, 'c.example.org')
      expect([probe.answer?.rcode, probe.timeoutsAtAnswer, next.answer?.rcode, next.timeoutsAtAnswer]).toEqual([RCODE.SERVFAIL, 1, RCODE.SERVFAIL, 1])
      expect(g.stats.servfails).toBe(3)
      expect((await hole.received()).slice(0, 3)).toEqual(['failover.example.org', 'a.example.org', 'b.example.org'])
    } finally { g.stop(); hole.close() }
  })

  it('a dead port (nothing listening) is a dead upstream too', async () => {
    const f = new Forwarder({ upstreams: [{ host: '127.0.0.1', port: dead }, { host: '127.0.0.1', port }], timeoutMs: 200, log })
    await f.start()
    try {
      const a = await askNoting(f, 'deadport.example.org')
      expect([a.answer?.answers[0]?.data, a.timeoutsAtAnswer]).toEqual(['203.0.113.7', 1])
      const b = await askNoting(f, 'deadport-next.example.org')
      expect([b.answer?.answers[0]?.data, b.timeoutsAtAnswer]).toEqual(['203.0.113.7', 1])
    } finally { f.stop() }
  })
})
