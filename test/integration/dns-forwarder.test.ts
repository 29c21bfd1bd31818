// The forwarder against a real resolver (dnsmasq on loopback): cached answers count their TTLs
// down, identical queries in flight share one upstream query, a dead upstream is skipped for
// the next, and with every upstream down the answer is SERVFAIL at once.
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
      await new Promise((resolve) => setTimeout(resolve, 100))
      const after = (dnsmasq.stdout() + dnsmasq.stderr()).split('\n').filter((l) => l.includes('query[A] same.example.org')).length
      expect(after - before).toBe(1)
    } finally { f.stop() }
  })

  it('fails over from a dead upstream, and answers SERVFAIL at once while all are down', async () => {
    const f = new Forwarder({ upstreams: [{ host: '127.0.0.1', port: dead }, { host: '127.0.0.1', port }], timeoutMs: 200, log })
    await f.start()
    try {
      const t0 = Date.now()
      const a = await ask(f, 'failover.example.org')
      expect(a?.answers[0]?.data).toBe('203.0.113.7')
      expect(Date.now() - t0).toBeGreaterThanOrEqual(150) // waited for the dead one once
      const t1 = Date.now()
      expect((await ask(f, 'next.example.org'))?.answers[0]?.data).toBe('203.0.113.7')
      expect(Date.now() - t1).toBeLessThan(150) // the dead one is skipped now
    } finally { f.stop() }

    const g = new Forwarder({ upstreams: [{ host: '127.0.0.1', port: dead }], timeoutMs: 200, log })
    await g.start()
    try {
      expect((await ask(g, 'a.example.org'))?.rcode).toBe(RCODE.SERVFAIL)
      const t2 = Date.now()
      expect((await ask(g, 'b.example.org'))?.rcode).toBe(RCODE.SERVFAIL)
      expect(Date.now() - t2).toBeLessThan(50)
    } finally { g.stop() }
  })
})
