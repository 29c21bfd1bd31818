// Real-traffic checks of the network lab (test/lab/lab.ts): NAT behaviour per site kind,
// LAN/WAN isolation, hole punching between cone sites, port forwards and teardown.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { execFileSync, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanupStaleLabs, createLab, type Lab, type LabHost, type LabProcess } from '../lab/lab.ts'

const NODE = fileURLToPath(new URL('../../node_modules/.bin/node', import.meta.url))

// --- tiny inline programs run inside the namespaces -------------------------------------------

/** UDP servers on `ports`: log every datagram and reply with the source address they observed. */
function udpObserver (ports: number[]): string[] {
  return [NODE, '-e', `
const dgram = require('node:dgram')
for (const port of ${JSON.stringify(ports)}) {
  const s = dgram.createSocket('udp4')
  s.on('message', (m, r) => {
    console.log('RECV ' + port + ' ' + r.address + ':' + r.port + ' ' + m)
    s.send(r.address + ':' + r.port, r.port, r.address)
  })
  s.bind(port, () => console.log('READY ' + port))
}`]
}

interface UdpResult { local: number, replies: Array<{ from: string, msg: string }> }

/**
 * One UDP socket (bound to bindPort, 0 = any) sends 'hello' `count` times to every target.
 * Prints its result as soon as every target replied (expectReplies) or after waitMs, so positive
 * checks stay fast yet tolerate a loaded machine, and negative checks wait a fixed time.
 */
function udpClient (o: { targets: Array<[string, number]>, count?: number, waitMs?: number, expectReplies?: boolean }): string[] {
  return [NODE, '-e', `
const dgram = require('node:dgram')
const targets = ${JSON.stringify(o.targets)}
const s = dgram.createSocket('udp4')
const replies = []
const finish = () => { console.log(JSON.stringify({ local: s.address().port, replies })); process.exit(0) }
s.on('message', (m, r) => {
  replies.push({ from: r.address + ':' + r.port, msg: String(m) })
  if (${o.expectReplies ?? false} && new Set(replies.map(x => x.from)).size === targets.length) finish()
})
s.bind(0, () => {
  let n = 0
  const tick = () => {
    for (const [ip, port] of targets) s.send('hello', port, ip)
    if (++n < ${o.count ?? 2}) setTimeout(tick, 25)
  }
  tick()
  setTimeout(finish, ${o.waitMs ?? 5000})
})`]
}

/**
 * Hole punching peer: binds `port` and sends to peer:port every 25 ms, after delayMs, until it
 * has heard from the peer and sent 10 more (so the peer also hears back), or maxMs passes.
 */
function udpPuncher (port: number, peer: string, delayMs: number, maxMs = 5000): string[] {
  return [NODE, '-e', `
const s = require('node:dgram').createSocket('udp4')
const replies = []
let extra = 0
const finish = () => { console.log(JSON.stringify({ local: ${port}, replies })); process.exit(0) }
s.on('message', (m, r) => replies.push({ from: r.address + ':' + r.port, msg: String(m) }))
s.bind(${port}, () => {
  const tick = () => {
    s.send('hello', ${port}, ${JSON.stringify(peer)})
    if (replies.length > 0 && ++extra >= 10) setTimeout(finish, 100)
    else setTimeout(tick, 25)
  }
  setTimeout(tick, ${delayMs})
  setTimeout(finish, ${maxMs})
})`]
}

/** TCP echo server; logs each connection's remote address. */
function tcpEcho (port: number): string[] {
  return [NODE, '-e', `
require('node:net').createServer(c => {
  console.log('CONN ' + c.remoteAddress + ':' + c.remotePort)
  c.on('error', () => {})
  c.pipe(c)
}).listen(${port}, '0.0.0.0', () => console.log('READY ${port}'))`]
}

interface TcpResult { ok: boolean, data?: string, error?: string }

/** Connects, sends a token and expects it echoed back. */
function tcpClient (host: string, port: number, timeoutMs = 1500): string[] {
  return [NODE, '-e', `
const token = 'ping-' + Math.random().toString(36).slice(2)
const c = require('node:net').connect({ host: ${JSON.stringify(host)}, port: ${port} })
const done = r => { console.log(JSON.stringify(r)); c.destroy(); process.exit(0) }
let data = ''
c.setTimeout(${timeoutMs}, () => done({ ok: false, error: 'timeout' }))
c.on('connect', () => c.write(token))
c.on('data', d => { data += d; if (data.length >= token.length) done({ ok: data === token, data }) })
c.on('error', e => done({ ok: false, error: e.code }))`]
}

// --- helpers ----------------------------------------------------------------------------------

async function runJson<T> (lab: Lab, host: string, argv: string[]): Promise<T> {
  const r = await lab.exec(host, argv, { timeoutMs: 15_000 })
  const line = r.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as T
  } catch {
    throw new Error(`bad output from ${host} (code ${r.code}): ${r.stdout}\n${r.stderr}`)
  }
}

async function startServer (lab: Lab, host: string, argv: string[], ports: number[]): Promise<LabProcess> {
  const p = lab.spawn(host, argv)
  for (const port of ports) await p.waitForLine(new RegExp(`^READY ${port}$`))
  return p
}

function labNamespaces (prefix: string): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n').map(l => l.split(' ')[0] ?? '').filter(n => n.startsWith(prefix))
}

function recvLines (p: LabProcess): string[] {
  return p.stdout().split('\n').filter(l => l.startsWith('RECV '))
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

// --- the lab ----------------------------------------------------------------------------------

describe('network lab', () => {
  let lab: Lab
  let relay: LabHost
  let relayUdp: LabProcess
  let relayTcp: LabProcess
  let b1Echo: LabProcess

  beforeAll(async () => {
    lab = await createLab({
      relays: 1,
      sites: [
        { name: 'a', nat: 'cone', hosts: 2 },
        { name: 'b', nat: 'cone' },
        { name: 'c', nat: 'symmetric' },
        { name: 'd', nat: 'udp-blocked' }
      ]
    })
    relay = lab.host('relay0')
    ;[relayUdp, relayTcp, b1Echo] = await Promise.all([
      startServer(lab, 'relay0', udpObserver([3478, 3479, 3480]), [3478, 3479, 3480]),
      startServer(lab, 'relay0', tcpEcho(7000), [7000]),
      startServer(lab, 'b1', tcpEcho(5201), [5201])
    ])
  })

  afterAll(async () => {
    await lab?.teardown()
  })

  it('builds the documented topology quickly', () => {
    expect(lab.prefix).toMatch(/^em[0-9a-z]{4}-$/)
    expect(lab.setupMs).toBeLessThan(5000)
    expect(relay).toEqual({ name: 'relay0', ns: `${lab.prefix}relay0`, ip: '198.51.100.10' })
    expect(lab.sites.map(s => [s.name, s.nat, s.publicIp, s.lanCidr])).toEqual([
      ['a', 'cone', '198.51.100.20', '10.1.0.0/24'],
      ['b', 'cone', '198.51.100.21', '10.2.0.0/24'],
      ['c', 'symmetric', '198.51.100.22', '10.3.0.0/24'],
      ['d', 'udp-blocked', '198.51.100.23', '10.4.0.0/24']
    ])
    expect(lab.site('a').hosts.map(h => [h.name, h.ip, h.ns])).toEqual([
      ['a1', '10.1.0.10', `${lab.prefix}a1`],
      ['a2', '10.1.0.11', `${lab.prefix}a2`]
    ])
    expect(labNamespaces(lab.prefix).sort()).toEqual([...lab.namespaces].sort())
    expect(() => lab.host('zz9')).toThrow(/unknown host/)
  })

  it('cone NAT keeps the source port; symmetric NAT maps each destination to a new port', async () => {
    const targets: Array<[string, number]> = [[relay.ip, 3478], [relay.ip, 3479], [relay.ip, 3480]]
    const [cone, sym] = await Promise.all([
      runJson<UdpResult>(lab, 'a1', udpClient({ targets, expectReplies: true })),
      runJson<UdpResult>(lab, 'c1', udpClient({ targets, expectReplies: true }))
    ])

    const coneSeen = new Set(cone.replies.map(r => r.msg))
    expect(coneSeen).toEqual(new Set([`${lab.site('a').publicIp}:${cone.local}`]))
    await relayUdp.waitForLine(new RegExp(`^RECV 3478 ${escapeRe(`${lab.site('a').publicIp}:${cone.local}`)} hello$`), 2000)

    const symSeen = new Set(sym.replies.map(r => r.msg))
    expect(symSeen.size).toBeGreaterThanOrEqual(2) // 3 destinations -> (almost surely) 3 mappings
    for (const addr of symSeen) {
      const [ip, port] = addr.split(':')
      expect(ip).toBe(lab.site('c').publicIp)
      expect(Number(port)).toBeGreaterThan(0)
    }
    // One mapping per destination, stable for repeated sends to the same destination.
    const perDest = new Map<string, Set<string>>()
    for (const r of sym.replies) perDest.set(r.from, (perDest.get(r.from) ?? new Set()).add(r.msg))
    expect(perDest.size).toBe(3)
    for (const s of perDest.values()) expect(s.size).toBe(1)
  })

  it('udp-blocked site: UDP never leaves, TCP does', async () => {
    const d = lab.site('d')
    const udp = await runJson<UdpResult>(lab, 'd1', udpClient({ targets: [[relay.ip, 3478]], count: 5, waitMs: 400 }))
    expect(udp.replies).toEqual([])
    expect(recvLines(relayUdp).filter(l => l.includes(d.publicIp))).toEqual([])

    const tcp = await runJson<TcpResult>(lab, 'd1', tcpClient(relay.ip, 7000))
    expect(tcp.ok).toBe(true)
    await relayTcp.waitForLine(new RegExp(`^CONN ${escapeRe(d.publicIp)}:\\d+$`), 2000)
  })

  it('hosts of one site reach each other directly on the LAN', async () => {
    const obs = await startServer(lab, 'a2', udpObserver([5000]), [5000])
    const r = await runJson<UdpResult>(lab, 'a1', udpClient({ targets: [[lab.host('a2').ip, 5000]], expectReplies: true }))
    expect(r.replies.map(x => x.msg)).toContain(`${lab.host('a1').ip}:${r.local}`)
    await obs.waitForLine(new RegExp(`^RECV 5000 ${escapeRe(`${lab.host('a1').ip}:${r.local}`)} hello$`), 2000)
    await obs.kill()
  })

  it('drops unsolicited traffic and has no route between site LANs', async () => {
    const a = lab.site('a')
    const listeners = await Promise.all(['a1', 'a2'].map(h => startServer(lab, h, udpObserver([6000]), [6000])))
    const fromRelay = await runJson<UdpResult>(lab, 'relay0', udpClient({ targets: [[a.publicIp, 6000]], count: 5, waitMs: 300 }))
    expect(fromRelay.replies).toEqual([])
    for (const l of listeners) expect(recvLines(l)).toEqual([])

    // b1 has an echo server on 5201, but a1 cannot address b's LAN.
    const cross = await runJson<TcpResult>(lab, 'a1', tcpClient(lab.host('b1').ip, 5201, 1000))
    expect(cross.ok).toBe(false)
    expect(b1Echo.stdout()).not.toContain('CONN')
    await Promise.all(listeners.map(async l => { await l.kill() }))
  })

  it('UDP hole punching works between two cone sites', async () => {
    const a = lab.site('a')
    const b = lab.site('b')
    // b1 starts late on purpose: a1's first packets hit b's router before b1 opened its mapping
    // (they must be dropped without leaving a conntrack entry that would steal port 4000).
    const [fromA, fromB] = await Promise.all([
      runJson<UdpResult>(lab, 'a1', udpPuncher(4000, b.publicIp, 0)),
      runJson<UdpResult>(lab, 'b1', udpPuncher(4000, a.publicIp, 150))
    ])
    expect(fromA.replies.length).toBeGreaterThan(0)
    expect(fromB.replies.length).toBeGreaterThan(0)
    expect(new Set(fromA.replies.map(r => `${r.from} ${r.msg}`))).toEqual(new Set([`${b.publicIp}:4000 hello`]))
    expect(new Set(fromB.replies.map(r => `${r.from} ${r.msg}`))).toEqual(new Set([`${a.publicIp}:4000 hello`]))
  })

  it('portForward exposes a host service on the site public IP', async () => {
    const a = lab.site('a')
    const b = lab.site('b')
    const before = await runJson<TcpResult>(lab, 'a1', tcpClient(b.publicIp, 15201, 800))
    expect(before.ok).toBe(false)

    await lab.portForward('b', 'tcp', 15201, 'b1', 5201)
    const r = await runJson<TcpResult>(lab, 'a1', tcpClient(b.publicIp, 15201))
    expect(r).toMatchObject({ ok: true })
    await b1Echo.waitForLine(new RegExp(`^CONN ${escapeRe(a.publicIp)}:\\d+$`), 2000)
  })

  it('parallel labs do not collide', async () => {
    const spec = { sites: [{ name: 'a', nat: 'cone' as const }] }
    const extra = await Promise.all([createLab(spec), createLab(spec)])
    try {
      expect(extra[0].prefix).not.toBe(extra[1].prefix)
      for (const l of extra) {
        await startServer(l, 'relay0', tcpEcho(7000), [7000])
        expect(await runJson<TcpResult>(l, 'a1', tcpClient('198.51.100.10', 7000))).toMatchObject({ ok: true })
      }
    } finally {
      await Promise.all(extra.map(async l => { await l.teardown() }))
    }
    for (const l of extra) expect(labNamespaces(l.prefix)).toEqual([])
  })

  it('cleanupStaleLabs removes labs whose creator died', async () => {
    const prefix = `emzz${Math.random().toString(36).slice(2, 4)}-`
    const ns = `${prefix}x`
    execFileSync('ip', ['netns', 'add', ns])
    const dead = spawnSync('true') // its pid is (almost surely) unused now
    mkdirSync('/tmp/edgemesh-labs', { recursive: true })
    const record = `/tmp/edgemesh-labs/${prefix}.json`
    writeFileSync(record, JSON.stringify({ prefix, pid: dead.pid, startTime: 1, namespaces: [ns], procs: [], createdAt: '' }))
    await cleanupStaleLabs() // (a concurrent run may have cleaned it first: check the outcome only)
    expect(labNamespaces(prefix)).toEqual([])
    expect(existsSync(record)).toBe(false)
    // Our own live lab is left alone.
    expect(labNamespaces(lab.prefix).length).toBe(lab.namespaces.length)
  })

  it('teardown kills spawned processes and removes every namespace', async () => {
    const sleeper = lab.spawn('a1', ['sleep', '600'])
    const procs = [sleeper, relayUdp, relayTcp, b1Echo]
    await sleep(50)
    expect(sleeper.child.exitCode).toBeNull()

    await lab.teardown()
    expect(labNamespaces(lab.prefix)).toEqual([])
    for (const p of procs) {
      await p.exited
      expect(existsSync(`/proc/${p.pid}`)).toBe(false)
    }
    expect(existsSync(`/tmp/edgemesh-labs/${lab.prefix}.json`)).toBe(false)
    await lab.teardown() // idempotent
    expect(() => lab.spawn('a1', ['true'])).toThrow(/torn down/)
  })
})
