// Unit tests for the relay set (agent/tunnel/relay-set.ts): home selection by ranking, failover
// on a confirmed loss, hysteresis before moving back, visitors on demand and their idle stop,
// and routes through a peer's home. Clients, probes and timers are fakes.
import { EventEmitter } from 'node:events'
import { describe, expect, it } from 'vitest'
import { RelaySet, type RelaySetTimers } from '../../agent/tunnel/relay-set.ts'
import { rankRelays } from '../../agent/tunnel/home-relay.ts'
import type { RelayRef } from '../../shared/config.ts'

class FakeClient extends EventEmitter<{ state: [boolean] }> {
  readonly relay: RelayRef
  readonly endpoint: { host: string, port: number }
  up = false
  started = false
  stopped = false
  /** what waitUp answers (a registration accepted within the wait) */
  answers: boolean
  constructor (relay: RelayRef, answers: boolean) {
    super()
    this.relay = relay
    this.endpoint = { host: relay.host, port: relay.udpPort }
    this.answers = answers
  }

  start (): void { this.started = true; if (this.answers) this.setUp(true) }
  stop (): void { this.stopped = true }
  setUp (up: boolean): void { this.up = up; this.emit('state', up) }
  waits = 0
  async waitUp (): Promise<boolean> { this.waits++; return this.up }
}

class FakeTimers implements RelaySetTimers {
  t = 0
  private fn: (() => void) | undefined
  private readonly timeouts = new Map<number, { due: number, fn: () => void }>()
  private nextId = 1
  now (): number { return this.t }
  setInterval (fn: () => void): unknown { this.fn = fn; return 1 }
  clearInterval (): void { this.fn = undefined }
  setTimeout (fn: () => void, ms: number): unknown { const id = this.nextId++; this.timeouts.set(id, { due: this.t + ms, fn }); return id }
  clearTimeout (h: unknown): void { this.timeouts.delete(h as number) }
  get pendingTimeouts (): number { return this.timeouts.size }
  private fireDue (): void {
    for (const [id, { due, fn }] of [...this.timeouts]) if (due <= this.t) { this.timeouts.delete(id); fn() }
  }
  /** advances time one second per tick */
  async advance (ms: number): Promise<void> {
    for (let i = 0; i < ms / 1000; i++) { this.t += 1000; this.fireDue(); this.fn?.(); await flush() }
  }
  /** advances time without a tick (timeouts only) */
  async advanceMs (ms: number): Promise<void> { this.t += ms; this.fireDue(); await flush() }
}

const flush = async (): Promise<void> => { for (let i = 0; i < 5; i++) await Promise.resolve() }

const relays: RelayRef[] = [0, 1, 2].map((i) => ({ host: `198.51.100.${10 + i}`, peerId: `12D3KooWrelay${i}`, tcpPort: 4001, udpPort: 4002 }))
const SELF = '12D3KooWself'
const ranking = rankRelays(SELF, relays)

function setup (opts: { relays?: RelayRef[], udp?: boolean, reachable?: (r: RelayRef) => boolean, inUse?: (r: RelayRef) => boolean, jitter?: { stableJitterMs: number, failoverJitterMs: number, random: () => number } } = {}) {
  const timers = new FakeTimers()
  const clients: FakeClient[] = []
  const homes: Array<[string, string | null]> = []
  const lost: string[] = []
  const probes: string[] = []
  const unwatched: string[] = []
  const reachable = new Set((opts.relays ?? relays).filter((r) => opts.reachable?.(r) ?? true).map((r) => r.peerId))
  const set = new RelaySet<FakeClient>({
    selfPeerId: SELF,
    relays: opts.relays ?? relays,
    createClient: (relay) => { const c = new FakeClient(relay, opts.udp !== false && reachable.has(relay.peerId)); clients.push(c); return c },
    probe: async (relay) => { probes.push(relay.peerId); return reachable.has(relay.peerId) },
    inUse: opts.inUse ?? (() => false),
    onHome: (home, previous) => { homes.push([home.peerId, previous?.peerId ?? null]) },
    onLost: (relay) => { lost.push(relay.peerId) },
    unwatch: (relay) => { unwatched.push(relay.peerId) },
    timers,
    // no jitter unless a test asks for it (its own tests below)
    random: opts.jitter?.random ?? (() => 0),
    settings: { stableMs: 30_000, stableJitterMs: opts.jitter?.stableJitterMs ?? 0, failoverJitterMs: opts.jitter?.failoverJitterMs ?? 0, visitorIdleMs: 60_000, probeIntervalMs: 2_000, homeGraceMs: 5_000 }
  })
  const running = (): string[] => clients.filter((c) => !c.stopped).map((c) => c.relay.peerId)
  const roles = (): Record<string, string> => Object.fromEntries(set.view().map((v) => [v.relay.peerId, v.role]))
  return { set, timers, clients, homes, lost, probes, unwatched, reachable, running, roles }
}

describe('RelaySet', () => {
  it('homes on the first relay of its ranking and runs a client there only', () => {
    const t = setup()
    t.set.start()
    expect(t.set.home).toBe(ranking[0])
    expect(t.homes).toEqual([[ranking[0]!.peerId, null]])
    expect(t.running()).toEqual([ranking[0]!.peerId])
    expect(t.roles()[ranking[0]!.peerId]).toBe('home')
    expect(Object.values(t.roles()).filter((r) => r === 'idle')).toHaveLength(2)
  })

  it('a home lost (connection closed, re-dial refused) moves to the next relay at once and drops its sessions', async () => {
    const t = setup()
    t.set.start()
    const [first, second] = ranking
    t.reachable.delete(first!.peerId)
    t.set.onRelayConnection(first!.peerId, false)
    await flush()
    expect(t.probes).toEqual([first!.peerId])
    expect(t.lost).toEqual([first!.peerId])
    expect(t.set.home).toBe(second)
    expect(t.homes.at(-1)).toEqual([second!.peerId, first!.peerId])
    expect(t.running()).toEqual([second!.peerId])
    expect(t.roles()[first!.peerId]).toBe('down')
  })

  it('a closed connection whose relay still answers a re-dial changes nothing', async () => {
    const t = setup()
    t.set.start()
    t.set.onRelayConnection(ranking[0]!.peerId, false)
    await flush()
    expect(t.lost).toEqual([])
    expect(t.set.home).toBe(ranking[0])
  })

  it('missed keepalives count as a sign of loss too', async () => {
    const t = setup()
    t.set.start()
    t.reachable.delete(ranking[0]!.peerId)
    t.clients[0]!.setUp(false)
    await flush()
    expect(t.set.home).toBe(ranking[1])
  })

  it('our own close of a connection is no loss', async () => {
    const t = setup()
    t.set.start()
    t.reachable.delete(ranking[0]!.peerId)
    t.set.expectClose(ranking[0]!.peerId)
    t.set.onRelayConnection(ranking[0]!.peerId, false)
    await flush()
    expect(t.probes).toEqual([])
    expect(t.set.home).toBe(ranking[0])
  })

  it('moves back to the preferred relay only after it answered for stableMs, and a loss meanwhile restarts the wait', async () => {
    const t = setup()
    t.set.start()
    const [first, second] = ranking
    t.reachable.delete(first!.peerId)
    t.set.onRelayConnection(first!.peerId, false)
    await flush()
    expect(t.set.home).toBe(second)
    // re-dialled every 2 s while lost; back at t = 10 s
    await t.timers.advance(10_000)
    expect(t.probes.filter((p) => p === first!.peerId).length).toBeGreaterThanOrEqual(4)
    t.reachable.add(first!.peerId)
    await t.timers.advance(2_000)
    expect(t.roles()[first!.peerId]).toBe('idle')
    await t.timers.advance(20_000)
    expect(t.set.home).toBe(second) // not yet: answering for ~20 s
    // lost again: the wait starts over
    t.reachable.delete(first!.peerId)
    t.set.onRelayConnection(first!.peerId, false)
    await flush()
    t.reachable.add(first!.peerId)
    await t.timers.advance(3_000)
    await t.timers.advance(20_000)
    expect(t.set.home).toBe(second)
    await t.timers.advance(12_000)
    expect(t.set.home).toBe(first)
    expect(t.homes.at(-1)).toEqual([first!.peerId, second!.peerId])
    expect(t.running()).toEqual([first!.peerId])
  })

  it('a home that never answers (dead at start) is checked after the grace and left', async () => {
    const t = setup({ reachable: (r) => r !== ranking[0] })
    t.set.start()
    expect(t.set.home).toBe(ranking[0])
    await t.timers.advance(5_000)
    expect(t.set.home).toBe(ranking[1])
  })

  it('a failed circuit reservation at home is a sign of loss (a UDP-blocked site has no other)', async () => {
    const t = setup({ udp: false, reachable: (r) => r !== ranking[0] })
    t.set.start()
    t.set.onReservation(ranking[0]!.peerId, false)
    await flush()
    expect(t.set.home).toBe(ranking[1])
    t.set.onReservation(ranking[1]!.peerId, true)
    await t.timers.advance(10_000)
    expect(t.set.home).toBe(ranking[1])
  })

  it('with every relay lost the home stays where it is', async () => {
    const t = setup({ relays: relays.slice(0, 2), reachable: () => false })
    t.set.start()
    const home = t.set.home
    t.set.onRelayConnection(home!.peerId, false)
    await flush()
    const other = t.set.home!
    expect(other).not.toBe(home)
    t.set.onRelayConnection(other.peerId, false)
    await flush()
    expect(t.set.home).toBe(other)
  })

  it('with every relay lost it keeps re-dialling them and moves to the first one back', async () => {
    const t = setup({ reachable: () => false })
    t.set.start()
    for (const r of ranking) t.set.onRelayConnection(r.peerId, false)
    await flush()
    expect(t.lost.sort()).toEqual(ranking.map((r) => r.peerId).sort())
    // nowhere to go: the last home stays (its client still registering)
    const stuck = t.set.home!
    expect(t.roles()[stuck.peerId]).toBe('down')
    expect(t.running()).toEqual([stuck.peerId])
    const before = t.probes.length
    await t.timers.advance(60_000)
    // each lost relay re-dialled every probeIntervalMs for as long as it takes
    expect(t.probes.length - before).toBeGreaterThanOrEqual(3 * 25)
    const back = ranking.find((r) => r !== stuck && r !== ranking[0])!
    t.reachable.add(back.peerId)
    await t.timers.advance(3_000)
    expect(t.set.home).toBe(back)
    expect(t.roles()[back.peerId]).toBe('home')
    expect(t.running()).toEqual([back.peerId])
    // and the preferred relay back later takes over after the hysteresis
    t.reachable.add(ranking[0]!.peerId)
    await t.timers.advance(40_000)
    expect(t.set.home).toBe(ranking[0])
  })

  it('failover jitter: a lost home is left after this agent\'s random delay, not at once; a home answering again meanwhile is kept', async () => {
    const t = setup({ jitter: { stableJitterMs: 0, failoverJitterMs: 1_000, random: () => 0.6 } })
    t.set.start()
    t.reachable.delete(ranking[0]!.peerId)
    t.set.onRelayConnection(ranking[0]!.peerId, false)
    await flush()
    expect(t.lost).toEqual([ranking[0]!.peerId]) // its sessions are dropped at once
    expect(t.set.home).toBe(ranking[0])
    await t.timers.advanceMs(599)
    expect(t.set.home).toBe(ranking[0])
    await t.timers.advanceMs(1)
    expect(t.set.home).toBe(ranking[1])
    expect(t.timers.pendingTimeouts).toBe(0)

    // the home answers again within the delay: nobody moves
    const u = setup({ jitter: { stableJitterMs: 0, failoverJitterMs: 1_000, random: () => 0.6 } })
    u.set.start()
    u.reachable.delete(ranking[0]!.peerId)
    u.set.onRelayConnection(ranking[0]!.peerId, false)
    await flush()
    u.set.onRelayConnection(ranking[0]!.peerId, true)
    await u.timers.advanceMs(1_000)
    expect(u.set.home).toBe(ranking[0])
    expect(u.homes).toHaveLength(1)
  })

  it('move-back jitter: the preferred relay takes over after stableMs plus this agent\'s share of stableJitterMs', async () => {
    const t = setup({ jitter: { stableJitterMs: 10_000, failoverJitterMs: 0, random: () => 0.5 } })
    t.set.start()
    t.reachable.delete(ranking[0]!.peerId)
    t.set.onRelayConnection(ranking[0]!.peerId, false)
    await flush()
    expect(t.set.home).toBe(ranking[1])
    t.reachable.add(ranking[0]!.peerId)
    await t.timers.advance(2_000) // re-dialled: answering since t = 2 s
    const backAt = t.timers.t
    await t.timers.advance(34_000)
    expect(t.set.home).toBe(ranking[1]) // 34 s < 30 s + 5 s
    await t.timers.advance(2_000)
    expect(t.set.home).toBe(ranking[0])
    expect(t.timers.t - backAt).toBeLessThanOrEqual(36_000)
  })

  it('stop() clears a pending failover', async () => {
    const t = setup({ jitter: { stableJitterMs: 0, failoverJitterMs: 1_000, random: () => 0.6 } })
    t.set.start()
    t.reachable.delete(ranking[0]!.peerId)
    t.set.onRelayConnection(ranking[0]!.peerId, false)
    await flush()
    expect(t.timers.pendingTimeouts).toBe(1)
    t.set.stop()
    expect(t.timers.pendingTimeouts).toBe(0)
    expect(t.running()).toEqual([])
  })

  it('one relay is home whatever happens: no probes, no loss', async () => {
    const t = setup({ relays: relays.slice(0, 1), reachable: () => false })
    t.set.start()
    t.set.onRelayConnection(relays[0]!.peerId, false)
    t.clients[0]!.setUp(false)
    t.set.onReservation(relays[0]!.peerId, false)
    await t.timers.advance(10_000)
    expect(t.probes).toEqual([])
    expect(t.lost).toEqual([])
    expect(t.set.home).toBe(relays[0])
    expect(t.running()).toEqual([relays[0]!.peerId])
  })

  it('routes to a peer through its published home, else its ranking; lost relays last', async () => {
    const t = setup()
    t.set.start()
    const peer = '12D3KooWpeer'
    const peerRanking = rankRelays(peer, relays)
    expect(t.set.routeTo(peer)).toEqual(peerRanking)
    expect(t.set.routeTo(peer, peerRanking[2]!.peerId)).toEqual([peerRanking[2], peerRanking[0], peerRanking[1]])
    expect(t.set.routeTo(peer, '12D3KooWunknown')).toEqual(peerRanking)
    t.reachable.delete(peerRanking[0]!.peerId)
    t.set.onRelayConnection(peerRanking[0]!.peerId, false)
    await flush()
    expect(t.set.routeTo(peer)).toEqual([peerRanking[1], peerRanking[2], peerRanking[0]])
  })

  it('registers as a visitor on demand, keeps it while used, stops it once idle', async () => {
    let used = false
    const t = setup({ inUse: () => used })
    t.set.start()
    const other = ranking[2]!
    const client = await t.set.introducer(other)
    expect(client?.relay).toBe(other)
    expect(t.running().sort()).toEqual([ranking[0]!.peerId, other.peerId].sort())
    // dialled at once (the connection that shows its loss)
    expect(t.probes).toEqual([other.peerId])
    expect(t.roles()[other.peerId]).toBe('visitor')
    expect(t.set.clientAt(client!.endpoint)).toBe(client)
    // the home's own client introduces for peers homed with us
    expect(await t.set.introducer(ranking[0]!)).toBe(t.clients[0])
    used = true
    await t.timers.advance(70_000)
    expect(t.roles()[other.peerId]).toBe('visitor')
    expect(t.unwatched).toEqual([])
    used = false
    await t.timers.advance(1_000)
    expect(t.roles()[other.peerId]).toBe('idle')
    expect(client!.stopped).toBe(true)
    expect(t.unwatched).toEqual([other.peerId])
    expect(t.running()).toEqual([ranking[0]!.peerId])
  })

  it('a visited relay that does not answer its dial is lost here: routes put it last, dials stop waiting there', async () => {
    const t = setup({ reachable: (r) => r !== ranking[2] })
    t.set.start()
    const dead = ranking[2]!
    expect(await t.set.introducer(dead)).toBeUndefined() // its registration is never accepted
    await flush()
    expect(t.probes).toEqual([dead.peerId])
    expect(t.lost).toEqual([dead.peerId])
    expect(t.roles()[dead.peerId]).toBe('down')
    expect(t.set.routeTo('12D3KooWany', dead.peerId).at(-1)).toBe(dead)
    const waitsBefore = t.clients.find((c) => c.relay === dead)!.waits
    expect(await t.set.introducer(dead)).toBeUndefined()
    expect(t.clients.find((c) => c.relay === dead)!.waits).toBe(waitsBefore)
    await t.timers.advance(1_000) // and the visitor registration is stopped
    expect(t.running()).toEqual([ranking[0]!.peerId])
  })

  it('no visitor registration where UDP does not work, nor at a lost relay', async () => {
    const blocked = setup({ udp: false })
    blocked.set.start()
    expect(await blocked.set.introducer(ranking[1]!)).toBeUndefined()
    expect(blocked.running()).toEqual([ranking[0]!.peerId])

    const t = setup()
    t.set.start()
    t.reachable.delete(ranking[2]!.peerId)
    t.set.onRelayConnection(ranking[2]!.peerId, false)
    await flush()
    expect(await t.set.introducer(ranking[2]!)).toBeUndefined()
    expect(t.running()).toEqual([ranking[0]!.peerId])
  })

  it('a former home still in use stays registered as a visitor after the home moves back', async () => {
    const t = setup({ inUse: (r) => r === ranking[1] })
    t.set.start()
    t.reachable.delete(ranking[0]!.peerId)
    t.clients[0]!.setUp(false)
    await flush()
    expect(t.set.home).toBe(ranking[1])
    t.reachable.add(ranking[0]!.peerId)
    await t.timers.advance(40_000)
    expect(t.set.home).toBe(ranking[0])
    expect(t.roles()[ranking[1]!.peerId]).toBe('visitor')
    expect(t.running().sort()).toEqual([ranking[0]!.peerId, ranking[1]!.peerId].sort())
  })

  it('a UDP-blocked site never waits for a registration; where UDP worked, a dial waits briefly for a new home', async () => {
    const blocked = setup({ udp: false })
    blocked.set.start()
    expect(await blocked.set.introducer(ranking[0]!)).toBeUndefined()
    expect(blocked.clients[0]!.waits).toBe(0)

    const t = setup()
    t.set.start()
    t.reachable.delete(ranking[0]!.peerId)
    t.set.onRelayConnection(ranking[0]!.peerId, false)
    await flush()
    const newHome = t.clients.find((c) => c.relay === ranking[1])!
    newHome.up = false // not registered yet
    expect(await t.set.introducer(ranking[1]!)).toBeUndefined()
    expect(newHome.waits).toBe(1)
    newHome.up = true
    expect(await t.set.introducer(ranking[1]!)).toBe(newHome)
  })
})
