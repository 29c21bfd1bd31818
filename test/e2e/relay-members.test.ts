// The relay serves members only, within limits. A relay with the mesh's PSK and small limits in
// the NAT lab; a prober on another site (test/lab/relay-probe.ts: raw rendezvous datagrams with
// the repository's codecs, and hand-made circuit relay v2 reservations) plays strangers and a
// greedy member. Every refusal must show in the relay's /metrics.
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { stringify } from 'yaml'
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh, NODE_FLAGS, SERVER_BIN, metricValue } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'

const PROBE = join(import.meta.dirname, '../lab/relay-probe.ts')
const LIMITS = {
  maxAgentsPerIp: 3,
  // one token per 20 s: a burst of 3, then refusals however slowly the probe's datagrams go out
  connectsPerSecond: 0.05,
  connectBurst: 3,
  relayPairsPerAgent: 1,
  maxReservationsPerIp: 2
}
const NOT_REGISTERED = 3
const OVERLOADED = 4

let lab: Lab
let mesh: Mesh
let wrongKeyFile: string

beforeAll(async () => {
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }, { name: 'c', nat: 'cone', hosts: 2 }] })
  mesh = await Mesh.start(lab, { agents: ['a1', 'b1'], psk: true, relayConfig: { limits: LIMITS } })
  wrongKeyFile = join(mesh.dir, 'wrong-swarm.key')
  await writeFile(wrongKeyFile, `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}`)
}, 120_000)

afterAll(async () => {
  await mesh?.stop()
  await lab?.teardown()
})

const relayIp = (): string => mesh.relays[0]!.ip
const pskFile = (): string => join(mesh.dir, 'swarm.key')

async function probe<T = any> (host: string, plan: Record<string, unknown>): Promise<T> {
  const res = await lab.exec(host, [process.execPath, PROBE, JSON.stringify(plan)], { timeoutMs: 90_000 })
  expect(res.code, `probe on ${host}: ${res.stderr.slice(-2000)}`).toBe(0)
  return JSON.parse(res.stdout.trim().split('\n').at(-1)!) as T
}

const refusals = (metrics: string, reason: string): number => metricValue(metrics, 'edgemesh_relay_refusals_total', `reason="${reason}"`)

describe('members', () => {
  it('agents with the PSK register and reach each other through the relay', async () => {
    expect(['direct-udp', 'relay-udp']).toContain((await mesh.ping('a1', 'b1')).path)
    expect(metricValue(await mesh.relayMetrics(), 'edgemesh_registered_agents')).toBe(2)
    for (const host of ['a1', 'b1']) expect((await mesh.status(host)).relays[0].udp).toBe('up')
    // and hold a circuit reservation, limits and all
    await eventually(async () => { for (const host of ['a1', 'b1']) expect((await mesh.status(host)).relays[0].circuit).toBe('reserved') }, 10_000, 200)
  })
})

describe('strangers: a key without the PSK or with another one', () => {
  for (const [what, keyFile] of [['no PSK', () => null], ['the wrong PSK', () => wrongKeyFile]] as const) {
    it(`${what}: not registered, no candidates, no blind-relay pair`, async () => {
      const before = await mesh.relayMetrics()
      const r = await probe('c1', {
        kind: 'rendezvous', relay: { host: relayIp(), port: 4002 }, pskFile: keyFile(), keys: 1,
        connects: [{ from: 0, target: mesh.agent('a1').peerId, wantRelay: true, count: 2 }]
      })
      expect(r.keys[0].registered).toBe(false)
      // the only answer is "register first": no peer-info, so no candidates and no relay ids
      expect(r.connects.map((c: any) => c.reply)).toEqual([
        { type: 'connect-error', code: NOT_REGISTERED, reason: 'register first' },
        { type: 'connect-error', code: NOT_REGISTERED, reason: 'register first' }
      ])
      const after = await mesh.relayMetrics()
      expect(metricValue(after, 'edgemesh_dropped_datagrams_total', 'reason="bad-psk-mac"')).toBeGreaterThan(metricValue(before, 'edgemesh_dropped_datagrams_total', 'reason="bad-psk-mac"'))
      expect(refusals(after, 'connect-not-registered') - refusals(before, 'connect-not-registered')).toBe(2)
      // pairs only end (idle), a stranger's would have been added
      expect(metricValue(after, 'edgemesh_blind_relay_sessions')).toBeLessThanOrEqual(metricValue(before, 'edgemesh_blind_relay_sessions'))
      expect(metricValue(after, 'edgemesh_registered_agents')).toBe(2)
    })

    it(`${what}: the circuit relay refuses the connection (pnet), so no reservation`, async () => {
      const before = refusals(await mesh.relayMetrics(), 'circuit-handshake')
      const r = await probe('c1', { kind: 'reserve', relay: `/ip4/${relayIp()}/tcp/4001/p2p/${mesh.relays[0]!.peerId}`, pskFile: keyFile(), count: 1 })
      expect(r.results).toHaveLength(1)
      expect(r.results[0].dial).toBe('failed')
      expect(r.results[0].status).toBeUndefined()
      console.log(`circuit dial with ${what}: ${r.results[0].error}`)
      // the relay saw the failed handshake and counted it
      await eventually(async () => { expect(refusals(await mesh.relayMetrics(), 'circuit-handshake')).toBeGreaterThan(before) }, 10_000, 200)
    })
  }

  it('a real agent without the PSK: one loud warning at start, refused at the relay (UDP and circuit)', async () => {
    const c2 = await mesh.startExtraAgent('c2', { psk: 'none', peers: [] })
    const warnings = c2.proc.stdout().split('\n').filter((l) => l.includes('NO PRE-SHARED KEY'))
    expect(warnings).toHaveLength(1)
    expect(JSON.parse(warnings[0]!)).toMatchObject({ level: 40, msg: expect.stringContaining('open to any key') })
    await eventually(async () => {
      expect((await mesh.status('c2')).relays[0].udp).toBe('down')
      expect(refusals(await mesh.relayMetrics(), 'circuit-handshake')).toBeGreaterThanOrEqual(3)
    }, 10_000, 200)
    expect((await mesh.status('c2')).relays[0].circuit).toBe('none')
    expect(metricValue(await mesh.relayMetrics(), 'edgemesh_registered_agents')).toBe(2)
    await c2.proc.kill('SIGTERM')
  })
})

describe('limits for members', () => {
  it('registrations: the N+1th from one IP is refused; connects: a burst, then connect-error overloaded; blind-relay pairs: one per agent; connects without the registration\'s cookie get nothing and spend nothing', async () => {
    const before = await mesh.relayMetrics()
    const r = await probe('c1', {
      kind: 'rendezvous', relay: { host: relayIp(), port: 4002 }, pskFile: pskFile(), keys: LIMITS.maxAgentsPerIp + 1,
      connects: [
        // what a host spoofing this member's address could send: it does not know the cookie
        { from: 0, target: mesh.agent('b1').peerId, wantRelay: true, count: 5, wrongCookie: true },
        { from: 0, target: mesh.agent('b1').peerId, wantRelay: true, count: 5 }
      ]
    })
    expect(r.keys.map((k: any) => k.registered)).toEqual([true, true, true, false])
    // the refused one is told why (1: per IP), not left to think the relay is down
    expect(r.keys.map((k: any) => k.refused)).toEqual([null, null, null, 1])
    expect(r.connects.slice(0, 5).map((c: any) => c.reply)).toEqual([null, null, null, null, null])
    // the member's own connects find its bucket and its relay pair untouched
    const replies = r.connects.slice(5).map((c: any) => c.reply)
    // the burst: peer-info with b1's candidates; only the first carries a relay leg (one pair per agent)
    expect(replies.slice(0, 3).map((p: any) => p?.type)).toEqual(['peer-info', 'peer-info', 'peer-info'])
    for (const p of replies.slice(0, 3)) {
      expect(p.peer).toBe(mesh.agent('b1').peerId)
      expect(p.candidates).toBeGreaterThan(0)
    }
    expect(replies[0].relayLocalId).not.toBe(0)
    expect(replies.slice(1, 3).map((p: any) => [p.relayLocalId, p.relayRemoteId])).toEqual([[0, 0], [0, 0]])
    // then the bucket is empty
    expect(replies.slice(3)).toEqual([
      { type: 'connect-error', code: OVERLOADED, reason: 'connect rate limit of this relay reached: retry later' },
      { type: 'connect-error', code: OVERLOADED, reason: 'connect rate limit of this relay reached: retry later' }
    ])

    const after = await mesh.relayMetrics()
    expect(refusals(after, 'registrations-per-ip') - refusals(before, 'registrations-per-ip')).toBeGreaterThanOrEqual(1)
    expect(refusals(after, 'connect-rate') - refusals(before, 'connect-rate')).toBe(2)
    expect(refusals(after, 'connect-bad-cookie') - refusals(before, 'connect-bad-cookie')).toBe(5)
    expect(refusals(after, 'relay-pairs-per-agent') - refusals(before, 'relay-pairs-per-agent')).toBe(2)
    expect(metricValue(after, 'edgemesh_registered_agents')).toBe(2 + LIMITS.maxAgentsPerIp)
    // logged, once per reason
    const log = mesh.relays[0]!.proc.stdout()
    for (const reason of ['registrations-per-ip', 'connect-rate', 'relay-pairs-per-agent', 'connect-bad-cookie']) {
      expect(log.split('\n').filter((l) => l.includes(`relay refused a request (${reason})`)), reason).toHaveLength(1)
    }
    // the members' own mesh is unaffected
    expect(['direct-udp', 'relay-udp']).toContain((await mesh.ping('a1', 'b1')).path)
  })

  it('circuit reservations: the N+1th from one IP is refused; granted ones carry the duration and data limits', async () => {
    const before = refusals(await mesh.relayMetrics(), 'circuit-reservations-per-ip')
    const r = await probe('c1', { kind: 'reserve', relay: `/ip4/${relayIp()}/tcp/4001/p2p/${mesh.relays[0]!.peerId}`, pskFile: pskFile(), count: LIMITS.maxReservationsPerIp + 1 })
    expect(r.results.map((x: any) => x.status)).toEqual(['OK', 'OK', 'PERMISSION_DENIED'])
    for (const granted of r.results.slice(0, 2)) {
      // the relay's defaults: 64 GiB and a day per circuit (libp2p's relay sends its duration in ms)
      expect(granted.limit).toEqual({ data: String(64 * 2 ** 30), duration: String(86_400_000) })
    }
    expect(refusals(await mesh.relayMetrics(), 'circuit-reservations-per-ip') - before).toBe(1)
  })
})

describe('/metrics', () => {
  it('shows every kind of refusal seen here', async () => {
    const m = await mesh.relayMetrics()
    const seen = ['registrations-per-ip', 'connect-not-registered', 'connect-bad-cookie', 'connect-rate', 'relay-pairs-per-agent', 'circuit-handshake', 'circuit-reservations-per-ip']
    expect(Object.fromEntries(seen.map((r) => [r, refusals(m, r) > 0]))).toEqual(Object.fromEntries(seen.map((r) => [r, true])))
    expect(m).toContain('# HELP edgemesh_relay_refusals_total')
  })
})

describe('a relay without a PSK', () => {
  it('logs one loud warning at start', async () => {
    const config = join(mesh.dir, 'open-relay.yaml')
    await writeFile(config, stringify({
      identityFile: join(mesh.dir, 'open-relay.key'),
      listen: { host: '0.0.0.0', tcpPort: 4011, udpPort: 4012, http: '127.0.0.1:9091' },
      announce: [relayIp()]
    }))
    const proc = lab.spawn(mesh.relays[0]!.host, [process.execPath, ...NODE_FLAGS, SERVER_BIN, '--config', config], { logFile: join(mesh.dir, 'open-relay.log') })
    try {
      await proc.waitForLine(/edgemesh-server ready/, 20_000)
      const warnings = proc.stdout().split('\n').filter((l) => l.includes('NO PRE-SHARED KEY'))
      expect(warnings).toHaveLength(1)
      expect(JSON.parse(warnings[0]!)).toMatchObject({ level: 40, msg: expect.stringContaining('this relay is open to any key') })
      expect(warnings[0]).toContain('pskFile')
    } finally {
      await proc.kill('SIGTERM')
    }
  })
})
