// The relay's limits (server/limits.ts), the libp2p reservation options built from them
// (server/relay-host.ts) and their config defaults. Time is passed in, so nothing here waits.
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { multiaddr } from '@multiformats/multiaddr'
import { GroupLimiter, KeyedCounter, KeyedRateLimiter, LogThrottle, MAX_PENDING_UPGRADES, OPEN_RELAY_PER_IP, TokenBucket, connectionLimits, createRefuse, perIpLimits } from '../../server/limits.ts'
import { ipOf, openConnectionsPerIp, reservationGate, reservationOptions, type InboundConnection } from '../../server/relay-host.ts'
import { ServerConfig, loadConfig } from '../../shared/config.ts'
import { ConfigError } from '../../shared/errors.ts'

describe('TokenBucket', () => {
  it('lets a burst through, then one request per 1/rate seconds', () => {
    const b = new TokenBucket(2, 3, 1000)
    expect([b.take(1000), b.take(1000), b.take(1000), b.take(1000)]).toEqual([true, true, true, false])
    expect(b.take(1499)).toBe(false) // 0.998 of a token
    expect(b.take(1500)).toBe(true)
    expect(b.take(1500)).toBe(false)
    // a long pause refills to the burst, not beyond
    expect([b.take(60_000), b.take(60_000), b.take(60_000), b.take(60_000)]).toEqual([true, true, true, false])
  })

  it('a clock stepping back neither mints nor takes tokens', () => {
    const b = new TokenBucket(1, 1, 10_000)
    expect(b.take(10_000)).toBe(true)
    expect(b.take(5_000)).toBe(false)
    expect(b.take(10_999)).toBe(false)
    expect(b.take(11_000)).toBe(true)
  })

  it('over any run of requests, grants at most burst + rate * elapsed', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 50 }), fc.integer({ min: 1, max: 20 }), fc.array(fc.integer({ min: 0, max: 500 }), { maxLength: 300 }),
      (rate, burst, gaps) => {
        let now = 0
        const b = new TokenBucket(rate, burst, now)
        let granted = 0
        for (const g of gaps) { now += g; if (b.take(now)) granted++ }
        expect(granted).toBeLessThanOrEqual(burst + Math.floor(rate * now / 1000))
      }))
  })
})

describe('KeyedRateLimiter', () => {
  it('keys are independent; a key whose bucket refilled is forgotten by prune', () => {
    const l = new KeyedRateLimiter(1, 2)
    expect([l.allow('a', 0), l.allow('a', 0), l.allow('a', 0)]).toEqual([true, true, false])
    expect(l.allow('b', 0)).toBe(true)
    expect(l.size).toBe(2)
    l.prune(1000) // a: 1 of 2 tokens, b: full
    expect(l.size).toBe(1)
    l.prune(2000)
    expect(l.size).toBe(0)
    l.allow('c', 0)
    l.forget('c')
    expect(l.size).toBe(0)
  })
})

describe('GroupLimiter (agents per source IP, and in total)', () => {
  it('refuses the N+1th member of a group; refreshes always pass; others groups are not affected', () => {
    const g = new GroupLimiter(2, 10)
    for (const m of ['p1', 'p2']) { expect(g.check(m, '192.0.2.1')).toBe('ok'); g.set(m, '192.0.2.1') }
    expect(g.check('p3', '192.0.2.1')).toBe('per-group')
    expect(g.check('p1', '192.0.2.1')).toBe('ok')
    expect(g.check('p3', '192.0.2.2')).toBe('ok')
    g.delete('p2')
    expect(g.check('p3', '192.0.2.1')).toBe('ok')
  })

  it('refuses a new member when the total is reached, but not one moving between groups', () => {
    const g = new GroupLimiter(5, 2)
    g.set('p1', 'a'); g.set('p2', 'b')
    expect(g.check('p3', 'c')).toBe('total')
    expect(g.check('p1', 'c')).toBe('ok')
    g.set('p1', 'c')
    expect([g.countOf('a'), g.countOf('c'), g.size]).toEqual([0, 1, 2])
  })

  it('a member moving to a full group is refused there', () => {
    const g = new GroupLimiter(1)
    g.set('p1', 'a'); g.set('p2', 'b')
    expect(g.check('p1', 'b')).toBe('per-group')
  })

  it('prune drops the members of a group that are no longer alive', () => {
    const g = new GroupLimiter(3)
    for (const m of ['p1', 'p2', 'p3']) g.set(m, 'a')
    g.prune('a', (m) => m === 'p2')
    expect(g.countOf('a')).toBe(1)
    expect(g.check('p4', 'a')).toBe('ok')
  })

  it('admitting only what check allows never exceeds either bound', () => {
    const op = fc.record({ kind: fc.constantFrom('add', 'add', 'delete'), member: fc.integer({ min: 0, max: 30 }), group: fc.integer({ min: 0, max: 4 }) })
    fc.assert(fc.property(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 12 }), fc.array(op, { maxLength: 200 }), (perGroup, total, ops) => {
      const g = new GroupLimiter(perGroup, total)
      for (const o of ops) {
        const m = `p${o.member}`; const grp = `g${o.group}`
        if (o.kind === 'delete') g.delete(m)
        else if (g.check(m, grp) === 'ok') g.set(m, grp)
        expect(g.size).toBeLessThanOrEqual(total)
        for (let i = 0; i < 5; i++) expect(g.countOf(`g${i}`)).toBeLessThanOrEqual(perGroup)
      }
    }))
  })
})

describe('GroupLimiter.pruneAll', () => {
  it('drops the members no longer alive in every group, keeps the others', () => {
    const g = new GroupLimiter(5)
    for (let i = 0; i < 20; i++) g.set(`m${i}`, `ip${i % 4}`)
    g.pruneAll((m) => Number(m.slice(1)) % 2 === 0)
    expect(g.size).toBe(10)
    expect([0, 1, 2, 3].map((i) => g.countOf(`ip${i}`))).toEqual([5, 0, 5, 0])
  })
})

describe('circuit reservation gate (per source IP, and in total)', () => {
  const refusals = (): { reasons: string[], refuse: (r: string) => void } => {
    const reasons: string[] = []
    return { reasons, refuse: (r) => { reasons.push(r) } }
  }

  it('refuses the N+1th reservation from one IP and beyond the total; refreshes pass; an expired one frees its slot', () => {
    const { reasons, refuse } = refusals()
    const gate = reservationGate({ maxReservations: 3, maxReservationsPerIp: 2 }, refuse)
    const live = new Set<string>()
    const reserved = { has: (p: string) => live.has(p), get size () { return live.size } }
    const ask = (peer: string, ip: string): boolean => { const denied = gate.deny(peer, ip, reserved); if (!denied) live.add(peer); return denied }
    expect([ask('a', '10.0.0.1'), ask('b', '10.0.0.1'), ask('c', '10.0.0.1')]).toEqual([false, false, true])
    expect(ask('a', '10.0.0.1')).toBe(false) // refresh
    expect([ask('d', '10.0.0.2'), ask('e', '10.0.0.3')]).toEqual([false, true])
    expect(reasons).toEqual(['circuit-reservations-per-ip', 'circuit-reservations-total'])
    live.delete('b') // expired
    expect(ask('c', '10.0.0.1')).toBe(false)
  })

  it('peers cycling ids from many IPs cannot grow its index beyond twice the total', () => {
    const { refuse } = refusals()
    const max = 50
    const gate = reservationGate({ maxReservations: max, maxReservationsPerIp: 4 }, refuse)
    const live: string[] = []
    const reserved = { has: (p: string) => live.includes(p), get size () { return live.length } }
    let highest = 0
    for (let i = 0; i < 5_000; i++) {
      const peer = `peer-${i}`
      if (!gate.deny(peer, `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, reserved)) live.push(peer)
      if (live.length > 10) live.shift() // reservations expire as new ones come
      highest = Math.max(highest, gate.tracked)
    }
    expect(highest).toBeLessThanOrEqual(2 * max)
  })
})

/** A fake inbound TCP connection: closes (fires its close listeners once) when told to. */
function inbound (ip: string): InboundConnection & { close: () => void } {
  const listeners: Array<() => void> = []
  const c = {
    remoteAddr: multiaddr(`/ip4/${ip}/tcp/40000`),
    status: 'open',
    addEventListener: (_t: 'close', l: () => void) => { listeners.push(l) },
    close: () => { if (c.status !== 'open') return; c.status = 'closed'; for (const l of listeners.splice(0)) l() }
  }
  return c
}

describe('open TCP connections per source IP', () => {
  it('refuses the N+1th open connection of an IP (counted, with its reason) before libp2p sees it; other IPs and closed connections free room', () => {
    const refused: string[] = []
    const gate = openConnectionsPerIp(2, (reason) => { refused.push(reason) })
    let asked = 0
    const accept = (): boolean => { asked++; return true }
    const a = [inbound('192.0.2.1'), inbound('192.0.2.1'), inbound('192.0.2.1')]
    expect(a.map((c) => gate.admit(c, accept))).toEqual([true, true, false])
    expect(refused).toEqual(['circuit-connections-per-ip'])
    expect(asked).toBe(2) // libp2p's accept (which counts a pending upgrade) not asked for the refused one
    expect(gate.admit(inbound('192.0.2.2'), accept)).toBe(true)
    a[0]!.close()
    a[0]!.close()
    expect(gate.countOf('192.0.2.1')).toBe(1)
    expect(gate.admit(inbound('192.0.2.1'), accept)).toBe(true)
    expect(gate.admit(inbound('192.0.2.1'), accept)).toBe(false)
  })

  it('one libp2p refused, or already closed, does not count', () => {
    const gate = openConnectionsPerIp(1, () => {})
    expect(gate.admit(inbound('192.0.2.1'), () => false)).toBe(false)
    const closed = inbound('192.0.2.1'); closed.close()
    expect(gate.admit(closed, () => true)).toBe(true)
    expect(gate.countOf('192.0.2.1')).toBe(0)
  })

  it('over any run of opens and closes, counts exactly the admitted connections still open, never above the cap', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 2 }), fc.nat()), { maxLength: 200 }), (ops) => {
      const gate = openConnectionsPerIp(3, () => {})
      const open: Array<ReturnType<typeof inbound> & { ip: string }> = []
      for (const [opening, host, pick] of ops) {
        const ip = `198.51.100.${host}`
        if (opening) {
          const c = Object.assign(inbound(ip), { ip })
          const before = open.filter((o) => o.ip === ip).length
          expect(gate.admit(c, () => true)).toBe(before < 3)
          if (before < 3) open.push(c)
        } else if (open.length > 0) {
          open.splice(pick % open.length, 1)[0]!.close()
        }
        for (const h of [0, 1, 2]) expect(gate.countOf(`198.51.100.${h}`)).toBe(open.filter((o) => o.ip === `198.51.100.${h}`).length)
      }
    }))
  })
})

describe('KeyedCounter (blind-relay pairs per agent)', () => {
  it('at most max per key until released', () => {
    const c = new KeyedCounter(2)
    expect([c.tryAcquire('a'), c.tryAcquire('a'), c.tryAcquire('a'), c.tryAcquire('b')]).toEqual([true, true, false, true])
    c.release('a')
    expect(c.tryAcquire('a')).toBe(true)
    c.release('a'); c.release('a'); c.release('b')
    expect(c.keys).toBe(0)
    c.release('never') // a stray release does not go negative
    expect(c.count('never')).toBe(0)
  })
})

describe('refusals: every one counted, logged once a minute per reason', () => {
  it('createRefuse', () => {
    let now = 0
    const counted: string[] = []
    const logged: Array<Record<string, unknown>> = []
    const refuse = createRefuse((r) => counted.push(r), (d) => logged.push(d), () => now)
    for (let i = 0; i < 100; i++) refuse('connect-rate', { node: 'edge-1' })
    refuse('registrations-per-ip')
    now = 59_999
    refuse('connect-rate')
    now = 60_000
    refuse('connect-rate')
    expect(counted.filter((r) => r === 'connect-rate')).toHaveLength(102)
    expect(logged.map((d) => d.reason)).toEqual(['connect-rate', 'registrations-per-ip', 'connect-rate'])
    expect(logged[0]).toEqual({ reason: 'connect-rate', node: 'edge-1' })
  })

  it('LogThrottle holds a bounded number of keys', () => {
    const t = new LogThrottle(1000, 2)
    expect([t.shouldLog('a', 0), t.shouldLog('b', 0), t.shouldLog('c', 0)]).toEqual([true, true, false])
    expect(t.shouldLog('c', 1000)).toBe(true) // a and b aged out and made room
  })
})

describe('circuit relay options (libp2p reservations)', () => {
  const defaults = ServerConfig.parse({}).limits

  it('defaults: limits applied, a day and 64 GiB per circuit, durations in ms', () => {
    expect(reservationOptions(defaults)).toEqual({
      maxReservations: 10_000, reservationTtl: 3_600_000, applyDefaultLimit: true, defaultDurationLimit: 86_400_000, defaultDataLimit: 64n * 2n ** 30n
    })
  })

  it('0 means no limit: both 0 turns libp2p\'s limits off; one 0 becomes its largest value', () => {
    expect(reservationOptions({ ...defaults, circuitDurationSeconds: 0, circuitDataBytes: 0 }).applyDefaultLimit).toBe(false)
    const noDuration = reservationOptions({ ...defaults, circuitDurationSeconds: 0 })
    expect(noDuration.applyDefaultLimit).toBe(true)
    expect(noDuration.defaultDurationLimit).toBe(2 ** 31 - 1) // Node's longest timer: beyond it AbortSignal.timeout fires at once
    expect(reservationOptions({ ...defaults, circuitDataBytes: 0 }).defaultDataLimit).toBe(2n ** 63n - 1n)
    expect(reservationOptions({ ...defaults, circuitDurationSeconds: 2_147_483 }).defaultDurationLimit).toBeLessThanOrEqual(2 ** 31 - 1)
  })

  it('ipOf takes the IP of a connection\'s remote address', () => {
    expect(ipOf(multiaddr('/ip4/198.51.100.20/tcp/40123'))).toBe('198.51.100.20')
    expect(ipOf(multiaddr('/ip6/2001:db8::1/tcp/1'))).toBe('2001:db8::1')
  })
})

describe('ServerConfig limits', () => {
  // maxAgentsPerIp and maxReservationsPerIp have no fixed default any more (were 256 each): unset,
  // they follow from the PSK (perIpLimits below), so a site with more nodes than 256 behind one
  // NAT can register them all on a relay whose registrations prove membership
  it('documented defaults', () => {
    expect(ServerConfig.parse({}).limits).toEqual({
      joinsPerIpPerSecond: 100,
      connectsPerSecond: 20,
      connectBurst: 100,
      relayPairsPerAgent: 256,
      maxRelayPairs: 20_000,
      maxReservations: 10_000,
      reservationTtlSeconds: 3600,
      circuitDurationSeconds: 86_400,
      circuitDataBytes: 68_719_476_736
    })
    expect(ServerConfig.parse({}).maxAgents).toBe(10_000)
  })

  it('unset per-IP caps: the totals with a PSK (registrations prove membership), OPEN_RELAY_PER_IP without; a configured cap always wins', () => {
    const totals = { maxAgents: 10_000, maxReservations: 8_000 }
    expect(perIpLimits({}, totals, true)).toEqual({ maxAgentsPerIp: 10_000, maxReservationsPerIp: 8_000 })
    expect(perIpLimits({}, totals, false)).toEqual({ maxAgentsPerIp: OPEN_RELAY_PER_IP, maxReservationsPerIp: OPEN_RELAY_PER_IP })
    expect(OPEN_RELAY_PER_IP).toBe(256)
    expect(perIpLimits({ maxAgentsPerIp: 3, maxReservationsPerIp: 2 }, totals, true)).toEqual({ maxAgentsPerIp: 3, maxReservationsPerIp: 2 })
    expect(perIpLimits({ maxReservationsPerIp: 2 }, totals, false)).toEqual({ maxAgentsPerIp: OPEN_RELAY_PER_IP, maxReservationsPerIp: 2 })
  })

  it('libp2p connection limits follow maxAgents/maxReservations and the join rate (its defaults: 5 per IP per second, 10 pending)', () => {
    const open = perIpLimits({}, { maxAgents: 10_000, maxReservations: 10_000 }, false)
    expect(connectionLimits(10_000, 10_000, 100, open)).toEqual({ maxConnections: 20_000, inboundConnectionThreshold: 100, maxIncomingPendingConnections: MAX_PENDING_UPGRADES, maxConnectionsPerIp: 2 * OPEN_RELAY_PER_IP })
    expect(connectionLimits(1_000, 3_000, 0.5, { maxAgentsPerIp: 5, maxReservationsPerIp: 7 })).toMatchObject({ maxConnections: 6_000, inboundConnectionThreshold: 1, maxConnectionsPerIp: 14 })
    expect(MAX_PENDING_UPGRADES).toBeGreaterThan(10)
  })

  it('open connections per IP follow the PSK: the total with one (a site of 1,000 behind one NAT), 512 without', () => {
    const totals = { maxAgents: 10_000, maxReservations: 10_000 }
    expect(connectionLimits(10_000, 10_000, 100, perIpLimits({}, totals, true)).maxConnectionsPerIp).toBe(20_000)
    expect(connectionLimits(10_000, 10_000, 100, perIpLimits({}, totals, false)).maxConnectionsPerIp).toBe(512)
    // never above the total
    expect(connectionLimits(100, 100, 100, { maxAgentsPerIp: 1_000, maxReservationsPerIp: 1_000 }).maxConnectionsPerIp).toBe(200)
  })

  it('a field given keeps the other defaults; errors name the field', async () => {
    const c = await loadConfig(ServerConfig, { overrides: [['limits.maxAgentsPerIp', '3']] })
    expect(c.limits.maxAgentsPerIp).toBe(3)
    expect(c.limits.connectBurst).toBe(100)
    await expect(loadConfig(ServerConfig, { overrides: [['limits.connectsPerSecond', '0']] })).rejects.toThrow(/limits\.connectsPerSecond/)
    await expect(loadConfig(ServerConfig, { overrides: [['limits.joinsPerIpPerSecond', '0']] })).rejects.toThrow(/limits\.joinsPerIpPerSecond/)
    await expect(loadConfig(ServerConfig, { overrides: [['limits.reservationTtlSeconds', '60']] })).rejects.toThrow(/limits\.reservationTtlSeconds/)
    await expect(loadConfig(ServerConfig, { overrides: [['limits.maxPairs', '1']] })).rejects.toThrow(ConfigError)
  })
})
