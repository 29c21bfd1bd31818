// Rendezvous: agents register from their one UDP socket; the relay records the public
// ip:port it observes (plus the LAN candidates the agent reports) and, when an agent asks to
// reach a peer, tells both sides each other's candidates, the punch session and the stream
// ids, and allocates a blind relay pair so the caller can race the relay against the punch.
import { randomBytes } from 'node:crypto'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from '../shared/logging.ts'
import type { Metrics } from '../shared/metrics.ts'
import type { UdxSocket } from '../shared/udx.ts'
import { endpointKey, type Endpoint } from '../shared/wire/addr.ts'
import { macMatches } from '../shared/wire/auth.ts'
import { peerIdFromBytes } from '../shared/peer-id.ts'
import {
  ConnectErrorCode, decodeMessage, encodeRelayMessage, looksLikeRendezvous,
  type Candidate, type ConnectMessage, type PeerInfoMessage, type RegisterMessage, type UnsignedRelayMessage
} from '../shared/wire/rendezvous.ts'
import type { BlindRelay } from './blind-relay.ts'
import { GroupLimiter, KeyedRateLimiter, createRefuse, type Refuse } from './limits.ts'

/** How far an agent's clock may be off before its registrations are refused. */
const MAX_CLOCK_SKEW_MS = 10 * 60_000

interface Registration {
  peerId: PeerId
  peerIdBytes: Uint8Array
  nodeName: string
  observed: Endpoint
  candidates: Candidate[]
  lastTimestampMs: number
  /** the timestamp of its latest accepted register: echoed in every message to it */
  echoMs: number
  lastSeen: number
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
  /** registrations per source IP; connect requests per agent (token bucket) */
  limits: { maxAgentsPerIp: number, connectsPerSecond: number, connectBurst: number }
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
  private readonly refuse: Refuse

  constructor (opts: RendezvousOptions) {
    this.opts = opts
    this.registrations = new GroupLimiter(opts.limits.maxAgentsPerIp, opts.maxAgents)
    this.connectRate = new KeyedRateLimiter(opts.limits.connectsPerSecond, opts.limits.connectBurst)
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
    const existing = this.byPeer.get(key)
    const sameSource = existing != null && endpointKey(existing.observed) === endpointKey(from)
    // a replayed (older) registration from elsewhere must not redirect a live peer
    if (existing != null && !sameSource && m.timestampMs <= existing.lastTimestampMs) { metrics.droppedDatagrams.inc({ reason: 'replay' }); return }
    if (!(await peerId.publicKey.verify(signed, m.signature))) { metrics.droppedDatagrams.inc({ reason: 'bad-signature' }); return }
    const verdict = this.registrations.check(key, from.host)
    if (verdict !== 'ok') { this.refuse(verdict === 'total' ? 'registrations-total' : 'registrations-per-ip', { peer: key, from: endpointKey(from) }); return }

    if (existing != null && !sameSource) this.byEndpoint.delete(endpointKey(existing.observed))
    const reg: Registration = {
      peerId,
      peerIdBytes: m.peerId,
      nodeName: m.nodeName,
      observed: { host: from.host, port: from.port },
      candidates: m.candidates,
      lastTimestampMs: Math.max(m.timestampMs, existing?.lastTimestampMs ?? 0),
      echoMs: m.timestampMs,
      lastSeen: now
    }
    this.byPeer.set(key, reg)
    this.byEndpoint.set(endpointKey(from), reg)
    this.registrations.set(key, from.host)
    metrics.registeredAgents.set(this.byPeer.size)
    if (existing == null || !sameSource) this.opts.log.info({ node: m.nodeName, peer: key, observed: endpointKey(from) }, 'agent registered')
    this.sendSigned({ type: 'registered', observed: reg.observed, bootId: this.bootId, keepaliveMs: this.opts.keepaliveMs, echo: reg.echoMs }, m.peerId, from)
  }

  private onConnect (m: ConnectMessage, from: Endpoint): void {
    const { metrics, relay } = this.opts
    const fromKey = endpointKey(from)
    const a = this.byEndpoint.get(fromKey)
    if (a == null) {
      this.refuse('connect-not-registered', { from: fromKey })
      this.sendSigned({ type: 'connect-error', requestId: m.requestId, code: ConnectErrorCode.notRegistered, reason: 'register first', echo: 0 }, m.requester, from)
      return
    }
    a.lastSeen = Date.now()
    const cacheKey = `${fromKey}/${m.requestId}`
    const cached = this.recentConnects.get(cacheKey)
    if (cached != null) {
      for (const [buf, to] of cached.replies) this.send(buf, to)
      return
    }
    if (!this.connectRate.allow(a.peerId.toString(), Date.now())) {
      this.refuse('connect-rate', { node: a.nodeName, from: fromKey })
      this.sendSigned({ type: 'connect-error', requestId: m.requestId, code: ConnectErrorCode.overloaded, reason: 'connect rate limit of this relay reached: retry later', echo: a.echoMs }, a.peerIdBytes, from)
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
    this.opts.metrics.registeredAgents.set(this.byPeer.size)
  }

  stop (): void { clearInterval(this.timer) }
}
