// The relays this agent talks to, in the home-region model of Tailscale's DERP: the agent holds
// its UDP registration and its circuit reservation at one relay only, its home: the first relay
// of its rendezvous-hash ranking (home-relay.ts) that answers. A peer homed elsewhere is
// introduced by its own home relay, where this agent registers as a visitor for as long as it
// uses it (the relay must know our public mapping to introduce us). So R relays share the load
// and any two agents still meet at one of them.
//
// Health of a relay comes from two signals: the rendezvous client's state (missed keepalives) and
// the libp2p TCP connection to the relay (a killed relay process closes it at once). Either one
// going makes the relay suspect; a re-dial then decides (refused or silent: lost). A lost home is
// replaced by the next relay of the ranking within `failoverJitterMs`; the preferred one takes
// over again only after it has answered for `stableMs` plus this agent's share of
// `stableJitterMs` (hysteresis: a flapping relay does not move its agents). The jitter spreads
// the agents of one relay (up to 1,000) over an interval instead of all registering and
// reserving at the next relay in the same instant.
// With one relay it is everyone's home and nothing ever moves.
import type { RelayRef } from '../../shared/config.ts'
import { endpointKey, type Endpoint } from '../../shared/wire/addr.ts'
import { rankRelays } from './home-relay.ts'

/** What the relay set needs of a rendezvous client (RendezvousClient; fakes in tests). */
export interface RelayClientLike {
  readonly relay: RelayRef
  readonly endpoint: Endpoint
  readonly up: boolean
  start: () => void
  stop: () => void
  waitUp: (timeoutMs: number) => Promise<boolean>
  on: (event: 'state', listener: (up: boolean) => void) => unknown
}

export type RelayRole = 'home' | 'visitor' | 'idle' | 'down'

export interface RelaySetSettings {
  /** a relay ranked above the home must answer this long before it becomes home again */
  stableMs: number
  /** plus a random share of this, drawn per agent (agents moving back are spread over it) */
  stableJitterMs: number
  /** a lost home is left after a random delay below this (agents failing over are spread over it) */
  failoverJitterMs: number
  /** a visitor registration unused this long (and carrying no relayed path) is stopped */
  visitorIdleMs: number
  /** how long a dial waits for a visitor registration (or a new home's) to be accepted */
  registerWaitMs: number
  /** how often a lost relay ranked above the home is re-dialled to see whether it is back */
  probeIntervalMs: number
  /** a home that gave no sign of life this long after becoming home is checked (re-dialled) */
  homeGraceMs: number
}

export const DEFAULT_RELAY_SET_SETTINGS: RelaySetSettings = {
  stableMs: 30_000, stableJitterMs: 10_000, failoverJitterMs: 1_000, visitorIdleMs: 60_000, registerWaitMs: 700, probeIntervalMs: 2_000, homeGraceMs: 5_000
}

export interface RelaySetTimers {
  now: () => number
  setInterval: (fn: () => void, ms: number) => unknown
  clearInterval: (handle: unknown) => void
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

const realTimers: RelaySetTimers = {
  now: () => performance.now(),
  setInterval: (fn, ms) => { const t = setInterval(fn, ms); t.unref(); return t },
  clearInterval: (h) => { clearInterval(h as NodeJS.Timeout) },
  setTimeout: (fn, ms) => { const t = setTimeout(fn, ms); t.unref(); return t },
  clearTimeout: (h) => { clearTimeout(h as NodeJS.Timeout) }
}

export interface RelaySetOptions<C extends RelayClientLike> {
  selfPeerId: string
  relays: readonly RelayRef[]
  /** a rendezvous client for the relay, not started (the caller wires its other events) */
  createClient: (relay: RelayRef) => C
  /**
   * whether the relay answers over TCP now (a libp2p dial; an open connection answers at once).
   * The connection it opens stays: a visited relay's loss then shows at once (it closes).
   */
  probe: (relay: RelayRef) => Promise<boolean>
  /** something still goes through this relay (a relay-udp path): its visitor registration stays */
  inUse: (relay: RelayRef) => boolean
  /** the home moved (also called once at start with previous null) */
  onHome: (home: RelayRef, previous: RelayRef | null) => void
  /** the relay was found lost: whatever goes through it is gone */
  onLost: (relay: RelayRef) => void
  /** a visitor registration stopped (unused): the connection its probe opened may go */
  unwatch?: (relay: RelayRef) => void
  log?: { info: (obj: object, msg: string) => void }
  settings?: Partial<RelaySetSettings>
  timers?: RelaySetTimers
  /** [0, 1) for the jitter (tests); Math.random by default */
  random?: () => number
}

interface Entry<C> {
  relay: RelayRef
  client: C | null
  role: 'home' | 'visitor' | 'idle'
  lost: boolean
  /** answering without a loss since (null: no sign of life yet) */
  upSince: number | null
  lastUsed: number
  lastProbe: number
  probing: boolean
  /** our own close of its connection (announced until then) is no loss */
  expectCloseUntil: number
}

export interface RelayView<C> { relay: RelayRef, role: RelayRole, client: C | null }

export class RelaySet<C extends RelayClientLike> {
  private readonly opts: RelaySetOptions<C>
  private readonly settings: RelaySetSettings
  private readonly timers: RelaySetTimers
  private readonly random: () => number
  /** in this agent's preference order */
  private readonly entries: Array<Entry<C>>
  private readonly byPeerId = new Map<string, Entry<C>>()
  private homeEntry: Entry<C> | null = null
  private homeSince = 0
  private timer: unknown
  /** a lost home is about to be left (the failover jitter) */
  private leaveTimer: unknown = undefined
  /** stableMs plus this agent's share of stableJitterMs */
  private readonly stableAfterMs: number
  private stopped = false
  /** a registration of ours was ever accepted (never, at a site that blocks UDP) */
  private udpSeen = false

  constructor (opts: RelaySetOptions<C>) {
    this.opts = opts
    this.settings = { ...DEFAULT_RELAY_SET_SETTINGS, ...opts.settings }
    this.timers = opts.timers ?? realTimers
    this.random = opts.random ?? Math.random
    this.stableAfterMs = this.settings.stableMs + this.settings.stableJitterMs * this.random()
    this.entries = rankRelays(opts.selfPeerId, opts.relays).map((relay) => ({
      relay, client: null, role: 'idle', lost: false, upSince: null, lastUsed: -Infinity, lastProbe: -Infinity, probing: false, expectCloseUntil: -Infinity
    }))
    for (const e of this.entries) this.byPeerId.set(e.relay.peerId, e)
  }

  start (): void {
    const first = this.entries[0]
    if (first != null) this.setHome(first)
    this.timer = this.timers.setInterval(() => { this.tick() }, 1_000)
  }

  /** The relay this agent is homed on now. */
  get home (): RelayRef | undefined { return this.homeEntry?.relay }

  get homeClient (): C | null { return this.homeEntry?.client ?? null }

  /** The running client whose relay sends from this endpoint (datagrams are checked by it). */
  clientAt (from: Endpoint): C | undefined {
    const key = endpointKey(from)
    for (const e of this.entries) if (e.client != null && endpointKey(e.client.endpoint) === key) return e.client
    return undefined
  }

  view (): Array<RelayView<C>> {
    // in configuration order: what the operator wrote
    return this.opts.relays.map((relay) => {
      const e = this.byPeerId.get(relay.peerId)!
      return { relay, role: e.lost ? 'down' : e.role, client: e.client }
    })
  }

  /**
   * The relays through which to reach a peer, best first: its published home if known, else the
   * first of its ranking that is not lost here, then the rest of its ranking; lost relays last.
   */
  routeTo (peerId: string, publishedHome?: string): RelayRef[] {
    const ranked = rankRelays(peerId, this.entries.map((e) => ({ peerId: e.relay.peerId, e }))).map((r) => r.e)
    const pinned = publishedHome != null ? ranked.find((e) => e.relay.peerId === publishedHome) : undefined
    const ordered = pinned != null ? [pinned, ...ranked.filter((e) => e !== pinned)] : ranked
    return [...ordered.filter((e) => !e.lost), ...ordered.filter((e) => e.lost)].map((e) => e.relay)
  }

  /**
   * A client registered at `relay` to ask it for an introduction: the home's, or a visitor
   * registration started on demand. Undefined when that relay is lost, or UDP does not work
   * from here (then no registration would be accepted: circuits are the way).
   */
  async introducer (relay: RelayRef): Promise<C | undefined> {
    const e = this.byPeerId.get(relay.peerId)
    if (e == null || this.stopped) return undefined
    const now = this.timers.now()
    e.lastUsed = now
    if (e.role === 'home') {
      if (e.client!.up) return e.client!
      // a new home registers within a round trip: worth a short wait where UDP works at all; an
      // old silent one is not
      if (this.udpSeen && now - this.homeSince < this.settings.homeGraceMs && await e.client!.waitUp(this.settings.registerWaitMs)) return e.client!
      return undefined
    }
    if (e.lost || !this.udpWorks()) return undefined
    if (e.client == null) {
      e.client = this.createClient(e)
      e.role = 'visitor'
      this.opts.log?.info({ relay: e.relay.host }, 'registering as a visitor with a peer\'s home relay')
      // dialled at once: a relay that does not answer is lost here (routes put it last, dials
      // stop waiting for a registration there) instead of costing every dial registerWaitMs
      this.verify(e, 'no answer to a visit')
    }
    const client = e.client
    return client.up || await client.waitUp(this.settings.registerWaitMs) ? client : undefined
  }

  /** Whether our UDP registrations are answered (a UDP-blocked site: never), or were until the home just moved. */
  private udpWorks (): boolean {
    return this.entries.some((e) => e.client?.up === true) || (this.udpSeen && this.timers.now() - this.homeSince < this.settings.homeGraceMs)
  }

  // ------------------------------------------------------------- health signals

  /** The libp2p connection to a relay opened or closed (peer id of the remote). */
  onRelayConnection (peerId: string, open: boolean): void {
    const e = this.byPeerId.get(peerId)
    if (e == null || this.stopped) return
    if (open) { this.alive(e); return }
    if (this.timers.now() <= e.expectCloseUntil) { e.expectCloseUntil = -Infinity; return }
    this.suspect(e, 'connection closed')
  }

  /** A circuit reservation at this relay was made (true) or failed (false). */
  onReservation (peerId: string, ok: boolean): void {
    const e = this.byPeerId.get(peerId)
    if (e == null || this.stopped) return
    if (ok) this.alive(e)
    else this.suspect(e, 'reservation failed')
  }

  /** Our own close of the connection to this relay follows (within 5 s): not a sign of loss. */
  expectClose (peerId: string): void {
    const e = this.byPeerId.get(peerId)
    if (e != null) e.expectCloseUntil = this.timers.now() + 5_000
  }

  private alive (e: Entry<C>): void {
    if (e.lost) this.opts.log?.info({ relay: e.relay.host }, 'relay answers again')
    e.lost = false
    e.upSince ??= this.timers.now()
  }

  /** A sign of loss: re-dial the relay; refused or silent means lost. */
  private suspect (e: Entry<C>, why: string): void {
    // one relay is everyone's home whatever happens: its client and reservation loop recover it
    if (this.entries.length < 2 || e.lost || e.probing) return
    e.upSince = null
    this.verify(e, why)
  }

  /** Re-dials the relay: answered, it is alive; refused or silent, lost. */
  private verify (e: Entry<C>, why: string): void {
    if (e.lost || e.probing) return
    e.probing = true
    e.lastProbe = this.timers.now()
    this.opts.probe(e.relay).then((ok) => {
      e.probing = false
      if (this.stopped) return
      if (ok) this.alive(e)
      else this.lose(e, why)
    }, () => { e.probing = false; if (!this.stopped) this.lose(e, why) })
  }

  private lose (e: Entry<C>, why: string): void {
    if (e.lost) return
    e.lost = true
    e.upSince = null
    this.opts.log?.info({ relay: e.relay.host, why, role: e.role }, 'relay lost')
    this.opts.onLost(e.relay)
    if (e === this.homeEntry) this.reselect()
  }

  // ------------------------------------------------------------- home selection

  private reselect (): void {
    const home = this.homeEntry
    if (home == null) return
    const now = this.timers.now()
    if (home.lost) {
      // left for the next relay that answers, after this agent's share of the jitter (every relay
      // lost: it stays, its client keeps registering, lost relays are re-dialled until one is back)
      if (this.leaveTimer != null || !this.entries.some((e) => !e.lost)) return
      const delay = Math.round(this.settings.failoverJitterMs * this.random())
      if (delay <= 0) { this.leaveLostHome(); return }
      this.leaveTimer = this.timers.setTimeout(() => {
        this.leaveTimer = undefined
        if (!this.stopped) this.leaveLostHome()
      }, delay)
      return
    }
    // a relay we prefer, back and answering for stableMs (plus this agent's jitter)
    for (const e of this.entries) {
      if (e === home) break
      if (!e.lost && e.upSince != null && now - e.upSince >= this.stableAfterMs) { this.setHome(e); return }
    }
  }

  /** The home is still lost (it may have answered again during the jitter): the next relay that answers. */
  private leaveLostHome (): void {
    const home = this.homeEntry
    if (home == null || !home.lost) return
    const next = this.entries.find((e) => !e.lost)
    if (next != null) this.setHome(next)
  }

  private setHome (next: Entry<C>): void {
    const previous = this.homeEntry
    if (previous === next) return
    const now = this.timers.now()
    if (previous != null) {
      // kept as a visitor while used (a relayed path through it, a recent introduction)
      if (previous.client != null && !previous.lost && (this.opts.inUse(previous.relay) || now - previous.lastUsed < this.settings.visitorIdleMs)) {
        previous.role = 'visitor'
      } else {
        this.stopClient(previous)
      }
    }
    next.role = 'home'
    next.client ??= this.createClient(next)
    this.homeEntry = next
    this.homeSince = now
    this.opts.log?.info({ relay: next.relay.host, previous: previous?.relay.host ?? null }, previous == null ? 'home relay' : 'home relay moved')
    this.opts.onHome(next.relay, previous?.relay ?? null)
  }

  private createClient (e: Entry<C>): C {
    const client = this.opts.createClient(e.relay)
    e.client = client // before start(): its first state event must find it
    client.on('state', (up) => {
      if (this.stopped || e.client !== client) return
      if (up) { this.udpSeen = true; this.alive(e) } else this.suspect(e, 'keepalives unanswered')
    })
    client.start()
    return client
  }

  private stopClient (e: Entry<C>): void {
    e.client?.stop()
    e.client = null
    e.role = 'idle'
  }

  /** Every second: hysteresis, visitors gone idle, lost relays re-dialled, a silent new home checked. */
  tick (): void {
    if (this.stopped) return
    const now = this.timers.now()
    const home = this.homeEntry
    if (home == null) return
    if (!home.lost && home.upSince == null && now - this.homeSince >= this.settings.homeGraceMs) this.suspect(home, 'no answer since it became home')
    for (const e of this.entries) {
      if (e.lost && !e.probing && now - e.lastProbe >= this.settings.probeIntervalMs) {
        e.lastProbe = now
        e.probing = true
        this.opts.probe(e.relay).then((ok) => { e.probing = false; if (ok && !this.stopped) this.alive(e) }, () => { e.probing = false })
      }
    }
    for (const e of this.entries) {
      if (e.role !== 'visitor') continue
      if (e.lost || (now - e.lastUsed >= this.settings.visitorIdleMs && !this.opts.inUse(e.relay))) {
        this.opts.log?.info({ relay: e.relay.host }, 'visitor registration stopped (unused)')
        this.stopClient(e)
        // a relay we prefer to the home keeps its connection: its loss must show while it may become home
        if (!e.lost && this.entries.indexOf(e) > this.entries.indexOf(home)) this.opts.unwatch?.(e.relay)
      }
    }
    this.reselect()
  }

  stop (): void {
    this.stopped = true
    this.timers.clearInterval(this.timer)
    if (this.leaveTimer != null) this.timers.clearTimeout(this.leaveTimer)
    for (const e of this.entries) this.stopClient(e)
  }
}
