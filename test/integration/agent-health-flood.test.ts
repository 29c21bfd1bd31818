// The probe listener's routes under a flood: requests that arrive while a check is running share
// its answer, so a burst of /readyz costs one DNS query to the agent's own listener and a burst
// of /healthz one control-socket request, not one each (a local process hammering 127.0.0.1
// cannot make the agent open a socket per request). Held answers make the overlap certain.
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { createServer, type Server } from 'node:http'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { HealthState, healthRoutes } from '../../agent/health/server.ts'
import { encodeRcode, parseQuery } from '../../agent/dns/wire.ts'

const BURST = 50
let dir: string
let dns: UdpSocket
let control: Server
let dnsQueries = 0
let controlRequests = 0
const heldDns: Array<() => void> = []
const heldControl: Array<() => void> = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-health-flood-'))
  dns = createSocket('udp4')
  dns.on('message', (msg, from) => {
    dnsQueries++
    const q = parseQuery(msg)
    if ('error' in q) return
    heldDns.push(() => { dns.send(encodeRcode(q, 0), from.port, from.address) })
  })
  await new Promise<void>((resolve) => dns.bind(0, '127.0.0.1', resolve))
  control = createServer((_req, res) => {
    controlRequests++
    heldControl.push(() => { res.writeHead(200).end('ok') })
  })
  await new Promise<void>((resolve) => control.listen(join(dir, 'control.sock'), resolve))
})

afterAll(async () => {
  dns?.close()
  control?.closeAllConnections()
  await new Promise((resolve) => control?.close(resolve))
  await rm(dir, { recursive: true, force: true })
})

/** waits until fn() holds, checking on every turn of the event loop (no clock) */
async function until (fn: () => boolean): Promise<void> {
  for (let i = 0; i < 100_000 && !fn(); i++) await new Promise((resolve) => setImmediate(resolve))
  expect(fn()).toBe(true)
}

function state (): HealthState {
  const s = new HealthState({ controlSocket: join(dir, 'control.sock'), timeoutMs: 60_000 })
  s.starting = undefined
  s.dns = { host: '127.0.0.1', port: (dns.address()).port, name: HealthState.dnsProbeName('cluster.local') }
  s.dnsListening = true
  return s
}

const URL_ = new URL('http://127.0.0.1/')

describe('probe listener under a flood', () => {
  it(`${BURST} concurrent /readyz: one DNS query, every caller gets its answer; the next burst asks again`, async () => {
    const ready = healthRoutes(state())['GET /readyz']!
    const before = dnsQueries
    const answers = Array.from({ length: BURST }, async () => await ready({} as never, URL_))
    await until(() => heldDns.length === 1)
    heldDns.shift()!()
    const results = await Promise.all(answers)
    expect(dnsQueries - before).toBe(1)
    for (const r of results) expect(r).toMatchObject({ status: 200, body: { ready: true, reasons: [], dns: { answer: 'NOERROR, 0 answer(s)' } } })
    // a request after the check finished gets a fresh one
    const again = ready({} as never, URL_)
    await until(() => heldDns.length === 1)
    heldDns.shift()!()
    expect(await again).toMatchObject({ status: 200 })
    expect(dnsQueries - before).toBe(2)
  })

  it(`${BURST} concurrent /healthz: one control-socket request, every caller gets its answer`, async () => {
    const live = healthRoutes(state())['GET /healthz']!
    const before = controlRequests
    const answers = Array.from({ length: BURST }, async () => await live({} as never, URL_))
    await until(() => heldControl.length === 1)
    // give any further (wrong) requests the chance to reach the server before answering
    for (let i = 0; i < 100; i++) await new Promise((resolve) => setImmediate(resolve))
    heldControl.shift()!()
    const results = await Promise.all(answers)
    expect(controlRequests - before).toBe(1)
    for (const r of results) expect(r).toEqual({ status: 200, body: { live: true, reasons: [] } })
  })
})
