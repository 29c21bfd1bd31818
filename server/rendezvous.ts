// Rendezvous: agents register from their one UDP socket; the relay records the public
// ip:port it observes (plus the LAN candidates the agent reports) and, when an agent asks to
// reach a peer, tells both sides each other's candidates, the punch session and the stream
// ids, and allocates a blind relay pair so the caller can race the relay against the punch.
import { randomBytes, timingSafeEqual } from 'node:crypto'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from '../shared/logging.ts'
import type { Metrics } from '../shared/metrics.ts'
import type { UdxSocket } from '../shared/udx.ts'
import { endpointKey, type Endpoint } from '../shared/wire/addr.ts'
import { macMatches } from '../shared/wire/auth.ts'
import { peerIdFromBytes } from '../shared/peer-id.ts'
import { ed25519Verifier } from '../shared/ed25519.ts'
import { LogThrottle } from '../shared/log-throttle.ts'
import {
  COOKIE_BYTES, ConnectErrorCode, RegisterRefusal, VERSION, decodeMessage, encodeRelayMessage, looksLikeRendezvous, versionOf,
  type Candidate, type ConnectMessage, type PeerInfoMessage, type RegisterMessage, type UnsignedRelayMessage
} from '../shared/wire/rendezvous.ts'
import type { BlindRelay } from './blind-relay.ts'
import { GroupLimiter, KeyedRateLimiter, TokenBucket, createRefuse, type Refuse } from './limits.ts'

/** How far an agent's clock may be off before its registrations are refused. */
const MAX_CLOCK_SKEW_MS = 10 * 60_000
/**
 * Signed answers to requests that prove nothing (a "register first" to an unknown source, an
 * "overloaded" beyond an agent's connect budget), per second for the whole relay, and burst.
 * Each costs an Ed25519 signature; beyond this they are dropped unanswered (counted).
 */
export const UNPROVEN_REPLIES_PER_SECOND = 200
/**
 * Registers one agent may have answered (each answer is signed), per second and burst: far above
 * an honest agent's (one per keepalive, at least 200 ms, plus one after a "register first"), so
 * that a key, a member's or without a PSK anyone's, cannot make the relay sign at line rate.
 */
export const REGISTERS_PER_SECOND = 10
const REGISTER_BURST = 20
function sameCandidates (a: readonly Candidate[], b: readonly Candidate[]): boolean {
  return a.length === b.length && a.every((c, i) => c.proto === b[i]!.proto && c.host === b[i]!.host && c.port === b[i]!.port)
}

/** ServerConfig's default for limits.joinsPerIpPerSecond */
export const DEFAULT_JOINS_PER_IP_PER_SECOND = 100
/** A registration with no accepted register for this many keepalives counts as gone quiet. */
const QUIET_KEEPALIVES = 3
const MIN_QUIET_MS = 5_000

interface Registration {
  peerId: PeerId
  /**
   * checks this agent's register signatures with its key made once (node:crypto KeyObject):
   * libp2p's verify imported the key and went through promises on every keepalive, ~500 a
   * second at 1,000 agents, and its garbage was most of what the relay allocated at rest.
   * Ed25519 keys only (the agents'); other key types keep libp2p's verify
   */
  verify?: (data: Uint8Array, signature: Uint8Array) => boolean
  peerIdBytes: Uint8Array
  nodeName: string
  observed: Endpoint
  candidates: Candidate[]
  lastTimestampMs: number
  /** the timestamp of its latest accepted register: echoed in every message to it; never moves back within a registration */
  echoMs: number
  /** when its latest register was accepted (only registers refresh it) */
  lastSeen: number
  /** random, per registration: sent in `registered` (to the registered address only) and required in every connect */
  cookie: Uint8Array
}

export interface RendezvousOptions {
  socket: UdxSocket
  relay: BlindRelay
  log: Logger
  metrics: Metrics
  keepaliveMs: number
  maxAgents: number
  /** signs what the relay tells agents, with its identity key (shared/ed25519.ts) */
  sign: (data: Uint8Array) => Uint8Array
  /**
   * registrations per source IP; connect requests per agent (token bucket); new registrations
   * per source IP per second (default DEFAULT_JOINS_PER_IP_PER_SECOND)
   */
  limits: { maxAgentsPerIp: number, connectsPerSecond: number, connectBurst: number, joinsPerIpPerSecond?: number }
  psk?: Uint8Array
}

export class RendezvousServer {
  readonly bootId = randomBytes(4).readUInt32BE(0)
  private readonly byPeer = new Map<string, Registration>()
  private readonly byEndpoint = new Map<string, Registration>()
  /** answers to recent connect requests, so a retransmitted request gets the same session */
  private readonly recentConnects = new Map<string, { at: number, replies: Array<[Uint8Array, Endpoint]> }>()
  private readonly timer: NodeJS.Timeout
  private readonly opts: RendezvousOptions
  /** registered agents by source IP */
  private readonly registrations: GroupLimiter
  private readonly connectRate: KeyedRateLimiter
  private readonly registerRate = new KeyedRateLimiter(REGISTERS_PER_SECOND, REGISTER_BURST)
  /** new registrations per source IP: a site may hold many agents, but joins at a bounded rate */
  private readonly joinRate: KeyedRateLimiter
  private readonly unprovenReplies = new TokenBucket(UNPROVEN_REPLIES_PER_SECOND, UNPROVEN_REPLIES_PER_SECOND, performance.now())
  private readonly refuse: Refuse
  private readonly versionLog = new LogThrottle(10 * 60_000, 16)

  constructor (opts: RendezvousOptions) {
    this.opts = opts
    this.registrations = new GroupLimiter(opts.limits.maxAgentsPerIp, opts.maxAgents)
    this.connectRate = new KeyedRateLimiter(opts.limits.connectsPerSecond, opts.limits.connectBurst)
    const joins = opts.limits.joinsPerIpPerSecond ?? DEFAULT_JOINS_PER_IP_PER_SECOND
    this.joinRate = new KeyedRateLimiter(joins, Math.max(1, Math.ceil(joins)))
    this.refuse = createRefuse((reason) => { opts.metrics.relayRefusals.inc({ reason }) }, (d, msg) => { opts.log.warn(d, msg) })
    this.timer = setInterval(() => { this.expire() }, Math.max(1_000, opts.keepaliveMs))
    this.timer.unref()
  }

  get registeredCount (): number { return this.byPeer.size }

  registration (peerId: string): { nodeName: string, observed: Endpoint } | undefined {
    const r = this.byPeer.get(peerId)
    return r == null ? undefined : { nodeName: r.nodeName, observed: r.observed }
  }

  /** Entry point for every datagram on the socket that is not a UDX stream packet. */
  onDatagram (buf: Uint8Array, from: Endpoint): void {
    const { metrics } = this.opts
    if (!looksLikeRendezvous(buf)) { metrics.droppedDatagrams.inc({ reason: 'not-rendezvous' }); return }
    if (versionOf(buf) !== VERSION) { this.onOtherVersion(versionOf(buf), from); return }
    let decoded
    try {
      decoded = decodeMessage(buf)
    } catch {
      metrics.droppedDatagrams.inc({ reason: 'malformed' })
      return
    }
    const m = decoded.message
    metrics.controlMessages.inc({ type: m.type })
    switch (m.type) {
      case 'register':
        this.onRegister(m, decoded.signed!, from).catch((err) => {
          metrics.droppedDatagrams.inc({ reason: 'register-failed' })
          this.opts.log.debug({ err, from }, 'register failed')
        })
        return
      case 'connect':
        this.onConnect(m, from)
        return
      default:
        // registered/peer-info/connect-error/punch are never sent to a relay
        metrics.droppedDatagrams.inc({ reason: 'unexpected-type' })
    }
  }

  private async onRegister (m: RegisterMessage, signed: Uint8Array, from: Endpoint): Promise<void> {
    const { metrics } = this.opts
    const now = Date.now()
    if (Math.abs(now - m.timestampMs) > MAX_CLOCK_SKEW_MS) { metrics.droppedDatagrams.inc({ reason: 'clock-skew' }); return }
    if (!macMatches(this.opts.psk, signed, m.mac)) { metrics.droppedDatagrams.inc({ reason: 'bad-psk-mac' }); return }
    let peerId: PeerId
    try { peerId = peerIdFromBytes(m.peerId) } catch { metrics.droppedDatagrams.inc({ reason: 'bad-peer-id' }); return }
    if (peerId.publicKey == null) { metrics.droppedDatagrams.inc({ reason: 'bad-peer-id' }); return }
    const key = peerId.toString()
    // A register no newer than the registration's latest is a replay (anyone who once saw one can
    // resend it, from the agent's spoofed address too), and must neither redirect the peer nor
    // move the echo back (an old echo makes the agent refuse everything the relay says). The one
    // exception: from the registered address itself, once the registration has gone quiet (no
    // register accepted for QUIET_KEEPALIVES keepalives) an older timestamp starts it afresh: that
    // is the same agent restarted, or its clock stepped back (agent/tunnel/relay-auth.ts follows
    // the wall clock down). Safe because a live agent keeps its registration from going quiet, so a
    // replay wins only while the agent is silent anyway, and the agent's next newer register takes
    // it back. From another address an older register waits for the registration to expire.
    // Checked before the signature (a replay costs no verification) and again after it (the await
    // let other registers of this peer in).
    if (this.orderOf(key, m.timestampMs, from, now) === 'replay') { metrics.droppedDatagrams.inc({ reason: 'replay' }); return }
    const verify = this.byPeer.get(key)?.verify ?? (peerId.type === 'Ed25519' ? ed25519Verifier(peerId) : undefined)
    const valid = verify != null ? verify(signed, m.signature) : await peerId.publicKey.verify(signed, m.signature)
    if (!valid) { metrics.droppedDatagrams.inc({ reason: 'bad-signature' }); return }
    const order = this.orderOf(key, m.timestampMs, from, now)
    if (order === 'replay') { metrics.droppedDatagrams.inc({ reason: 'replay' }); return }
    if (!this.registerRate.allow(key, performance.now())) { this.refuse('register-rate', { peer: key, from: endpointKey(from) }); return }
    const existing = this.byPeer.get(key)
    const sameSource = existing != null && endpointKey(existing.observed) === endpointKey(from)
    // a new agent, or one moving to another IP, joins (a NAT that changed the port does not):
    // dropped unanswered beyond the rate, the agent re-registers within a second while it is down
    if ((existing == null || existing.observed.host !== from.host) && !this.joinRate.allow(from.host, performance.now())) {
      this.refuse('registrations-per-ip-rate', { peer: key, from: endpointKey(from) })
      return
    }
    const verdict = this.registrations.check(key, from.host)
    if (verdict !== 'ok') {
      this.refuse(verdict === 'total' ? 'registrations-total' : 'registrations-per-ip', { peer: key, from: endpointKey(from) })
      // tell the agent why (signed, for its verified register), within the relay-wide budget
      if (this.mayAnswerUnproven()) this.sendSigned({ type: 'register-refused', reason: verdict === 'total' ? RegisterRefusal.total : RegisterRefusal.perIp, echo: m.timestampMs }, m.peerId, from)
      return
    }

    let reg: Registration
    if (existing != null && sameSource) {
      // a keepalive refreshes the registration in place: a new one per keepalive (~500 a second
      // at 1,000 agents) outlived the young generation and piled up as old-generation garbage
      if (existing.nodeName !== m.nodeName) existing.nodeName = m.nodeName
      if (!sameCandidates(existing.candidates, m.candidates)) existing.candidates = m.candidates
      existing.lastTimestampMs = m.timestampMs
      existing.echoMs = m.timestampMs
      existing.lastSeen = now
      reg = existing
    } else {
      if (existing != null) this.byEndpoint.delete(endpointKey(existing.observed))
      // copied: the datagram is a slice of a 68 KiB receive buffer, which a kept slice would pin
      // (m.peerId is a Buffer, whose slice() is a view, not a copy: heap snapshots showed it)
      const peerIdBytes = new Uint8Array(m.peerId)
      reg = {
        peerId: peerIdFromBytes(peerIdBytes),
        ...(verify != null ? { verify } : {}),
        peerIdBytes,
        nodeName: m.nodeName,
        observed: { host: from.host, port: from.port },
        candidates: m.candidates,
        lastTimestampMs: m.timestampMs,
        echoMs: m.timestampMs,
        lastSeen: now,
        // a new address gets a new cookie: whoever saw the old one on the old path cannot use it here
        cookie: randomBytes(COOKIE_BYTES)
      }
      this.byPeer.set(key, reg)
      this.byEndpoint.set(endpointKey(from), reg)
      this.registrations.set(key, from.host)
      metrics.registeredAgents.set(this.byPeer.size)
    }
    if (existing == null || !sameSource) this.opts.log.info({ node: m.nodeName, peer: key, observed: endpointKey(from) }, 'agent registered')
    else if (order === 'restart') this.opts.log.info({ node: m.nodeName, peer: key, observed: endpointKey(from) }, 'agent registered again with an older timestamp (restarted, or its clock stepped back)')
    this.sendSigned({ type: 'registered', observed: reg.observed, bootId: this.bootId, keepaliveMs: this.opts.keepaliveMs, cookie: reg.cookie, echo: reg.echoMs }, m.peerId, from)
  }

  private onConnect (m: ConnectMessage, from: Endpoint): void {
    const { metrics, relay } = this.opts
    const fromKey = endpointKey(from)
    const a = this.byEndpoint.get(fromKey)
    if (a == null) {
      this.refuse('connect-not-registered', { from: fromKey })
      // anyone can ask this from any (spoofed) source: the signature it costs is bounded
      if (this.mayAnswerUnproven()) this.sendSigned({ type: 'connect-error', requestId: m.requestId, code: ConnectErrorCode.notRegistered, reason: 'register first', echo: 0 }, m.requester, from)
      return
    }
    // Only a host on the agent's path has its cookie: a host that spoofs the agent's address
    // spends nothing of the agent's (no tokens, no relay pairs, no signatures, no introductions).
    if (!timingSafeEqual(m.cookie, a.cookie)) { this.refuse('connect-bad-cookie', { node: a.nodeName, from: fromKey }); return }
    const cacheKey = `${fromKey}/${m.requestId}`
    const cached = this.recentConnects.get(cacheKey)
    if (cached != null) {
      for (const [buf, to] of cached.replies) this.send(buf, to)
      return
    }
    if (!this.connectRate.allow(a.peerId.toString(), Date.now())) {
      this.refuse('connect-rate', { node: a.nodeName, from: fromKey })
      if (this.mayAnswerUnproven()) this.sendSigned({ type: 'connect-error', requestId: m.requestId, code: ConnectErrorCode.overloaded, reason: 'connect rate limit of this relay reached: retry later', echo: a.echoMs }, a.peerIdBytes, from)
      return
    }
    let targetKey: string
    try { targetKey = peerIdFromBytes(m.target).toString() } catch { metrics.droppedDatagrams.inc({ reason: 'bad-peer-id' }); return }
    const b = this.byPeer.get(targetKey)
    if (b == null) {
      this.sendSigned({ type: 'connect-error', requestId: m.requestId, code: ConnectErrorCode.peerNotOnUdp, reason: 'peer is not registered over UDP with this relay', echo: a.echoMs }, a.peerIdBytes, from)
      return
    }
    const session = randomBytes(8).readBigUInt64BE(0)
    const directA = relay.allocateId()
    const directB = relay.allocateId()
    let relayA = 0; let relayB = 0; let relaySideA = 0; let relaySideB = 0
    // peers behind the same public IP (one site, one NAT) get no relay leg: their direct LAN
    // path must win and the relay must carry none of their traffic
    if (m.wantRelay && a.observed.host !== b.observed.host) {
      relayA = relay.allocateId(); relayB = relay.allocateId()
      relaySideA = relay.allocateId(); relaySideB = relay.allocateId()
      if (!relay.open(relaySideA, { endpoint: a.observed, remoteId: relayA }, relaySideB, { endpoint: b.observed, remoteId: relayB }, a.peerId.toString())) {
        relayA = relayB = relaySideA = relaySideB = 0
      }
    }
    const toB: Omit<PeerInfoMessage, 'signature'> = {
      type: 'peer-info', requestId: 0, session, initiator: false, peer: a.peerIdBytes, peerName: a.nodeName,
      candidates: this.candidatesOf(a), directLocalId: directB, directRemoteId: directA, relayLocalId: relayB, relayRemoteId: relaySideB, echo: b.echoMs
    }
    const toA: Omit<PeerInfoMessage, 'signature'> = {
      type: 'peer-info', requestId: m.requestId, session, initiator: true, peer: b.peerIdBytes, peerName: b.nodeName,
      candidates: this.candidatesOf(b), directLocalId: directA, directRemoteId: directB, relayLocalId: relayA, relayRemoteId: relaySideA, echo: a.echoMs
    }
    const replies: Array<[Uint8Array, Endpoint]> = [[encodeRelayMessage(toB, b.peerIdBytes, this.opts.sign), b.observed], [encodeRelayMessage(toA, a.peerIdBytes, this.opts.sign), a.observed]]
    this.recentConnects.set(cacheKey, { at: Date.now(), replies })
    for (const [buf, to] of replies) this.send(buf, to)
    this.opts.log.debug({ from: a.nodeName, to: b.nodeName, relay: relayA !== 0 }, 'connect coordinated')
  }

  /** Where a register with this timestamp from `from` stands against the peer's current registration (see onRegister). */
  private orderOf (key: string, timestampMs: number, from: Endpoint, now: number): 'new' | 'newer' | 'restart' | 'replay' {
    const existing = this.byPeer.get(key)
    if (existing == null) return 'new'
    if (timestampMs > existing.lastTimestampMs) return 'newer'
    const sameSource = endpointKey(existing.observed) === endpointKey(from)
    return sameSource && now - existing.lastSeen > this.quietMs ? 'restart' : 'replay'
  }

  private get quietMs (): number { return Math.max(MIN_QUIET_MS, QUIET_KEEPALIVES * this.opts.keepaliveMs) }

  /** Takes one from the relay-wide budget of signed answers to requests that prove nothing; counts the ones over it. */
  private mayAnswerUnproven (): boolean {
    if (this.unprovenReplies.take(performance.now())) return true
    this.opts.metrics.droppedDatagrams.inc({ reason: 'unanswered-over-reply-budget' })
    return false
  }

  /** An agent of another protocol version (an older or newer release): counted, and said once in a while. */
  private onOtherVersion (version: number, from: Endpoint): void {
    this.opts.metrics.droppedDatagrams.inc({ reason: 'unsupported-version' })
    if (this.versionLog.shouldLog(String(version), performance.now())) {
      this.opts.log.warn({ from: endpointKey(from), version }, `an agent speaks rendezvous protocol v${version}, this relay v${VERSION}: upgrade the relay and the agents together (relay-tcp keeps working meanwhile)`)
    }
  }

  /** The observed public endpoint first: it is the one that works across NATs. */
  private candidatesOf (r: Registration): Candidate[] {
    const seen = new Set([endpointKey(r.observed)])
    const out: Candidate[] = [{ proto: 'udp', ...r.observed }]
    for (const c of r.candidates) {
      const k = `${c.proto}/${endpointKey(c)}`
      if (c.proto === 'udp' && seen.has(endpointKey(c))) continue
      if (seen.has(k)) continue
      seen.add(k)
      out.push(c)
    }
    return out.slice(0, 16)
  }

  private send (buf: Uint8Array, to: Endpoint): void {
    this.opts.socket.trySend(buf, to.port, to.host)
  }

  /** Relay-to-agent messages are signed for their recipient (agent/tunnel/relay-auth.ts checks them). */
  private sendSigned (m: UnsignedRelayMessage, recipient: Uint8Array, to: Endpoint): void {
    this.send(encodeRelayMessage(m, recipient, this.opts.sign), to)
  }

  private expire (): void {
    const now = Date.now()
    const ttl = Math.max(30_000, this.opts.keepaliveMs * 6)
    for (const [k, r] of this.byPeer) {
      if (now - r.lastSeen > ttl) {
        this.byPeer.delete(k)
        this.byEndpoint.delete(endpointKey(r.observed))
        this.registrations.delete(k)
        this.connectRate.forget(k)
        this.opts.log.info({ node: r.nodeName, peer: k }, 'agent registration expired')
      }
    }
    for (const [k, c] of this.recentConnects) if (now - c.at > 10_000) this.recentConnects.delete(k)
    this.connectRate.prune(now)
    this.registerRate.prune(performance.now())
    this.joinRate.prune(performance.now())
    this.opts.metrics.registeredAgents.set(this.byPeer.size)
  }

  stop (): void { clearInterval(this.timer) }
}
