// The tunnel: encrypted, multiplexed connections to other agents by node name, over the best
// path available. Path discovery runs beside the data path (Tailscale's magicsock idea):
//   - a dial (dialer.ts) races the blind UDP relay against hole punching (and direct TCP to
//     LAN/public candidates), so the first byte never waits for a punch that fails;
//   - every success is kept; new streams always go to the best open connection, so traffic
//     moves to a direct path as soon as one opens;
//   - while only relayed, punching is retried in the background;
//   - sites with UDP blocked use libp2p circuit relay v2 over TCP (relay-tcp);
//   - with several relays, this agent registers and reserves only at its home relay and reaches
//     a peer through the peer's home relay (relay-set.ts).
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection, PeerId, PrivateKey, Stream, StreamHandler } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { AgentConfig } from '../../shared/config.ts'
import { localIPv4 } from '../../shared/net.ts'
import type { Logger } from '../../shared/logging.ts'
import type { Metrics } from '../../shared/metrics.ts'
import { exportTunnelStatus } from './status-metrics.ts'
import { createUdx, type UdxSocket } from '../../shared/udx.ts'
import { endpointKey, type Endpoint } from '../../shared/wire/addr.ts'
import { VERSION, decodeMessage, isRelayMessage, looksLikeRendezvous, versionOf, type Candidate, type PeerInfoMessage } from '../../shared/wire/rendezvous.ts'
import { parsePeerId, peerIdFromBytes } from '../../shared/peer-id.ts'
import { ed25519Verifier } from '../../shared/ed25519.ts'
import { ConfigError } from '../../shared/errors.ts'
import type { PeerDirectory, PeerRecord } from './directory.ts'
import { createAgentNode, type AgentNode } from './node.ts'
import type { DeadPathReason, UdxPathStats } from './dgram-transport.ts'
import { classifyLibp2pConnection, isDirect, pathRank, type PathKind } from './paths.ts'
import { PunchRegistry } from './punch.ts'
import { Dialer, type RelayRoute } from './dialer.ts'
import { RendezvousClient } from './rendezvous-client.ts'
import { RelaySet, type RelayRole } from './relay-set.ts'
import { RelayLinks } from './relay-links.ts'
import type { RelayRef } from '../../shared/config.ts'
import { readExactly, readStream, send } from './stream-io.ts'
import { explainPingFailure, formatFailedPhases, RECENT_RESTART_MS, round, rttSummary, type ConnectionOrigin, type PingFailure, type PingPhase, type PingResult, type RelayDrop } from './ping-outcome.ts'
import { muxerOf, openOptimistic } from './optimistic-select.ts'

export type { PingResult } from './ping-outcome.ts'

export const PING_PROTOCOL = '/edgemesh/ping/1.0.0'

export interface TunnelOptions {
  nodeName: string
  privateKey: PrivateKey
  config: AgentConfig
  directory: PeerDirectory
  psk?: Uint8Array
  log: Logger
  metrics: Metrics
}

export interface PathStatus { path: PathKind, remote: string, streams: number, openedAt: number, udx?: UdxPathStats }

export interface PeerStatus {
  node: string
  peerId: string
  /** path new streams use now, or 'idle' when no connection is open */
  path: PathKind | 'idle'
  remote: string | null
  rttMs: number | null
  paths: PathStatus[]
}

/** role: home (registered and reserved here), visitor (registered to reach peers homed here), idle, down (lost) */
export interface RelayStatus { host: string, peerId: string, role: RelayRole, udp: 'up' | 'down', observed: string | null, circuit: 'reserved' | 'none', rttMs: number | null }

interface PeerState {
  record: PeerRecord
  peerId: PeerId
  dialing: Promise<Connection> | null
  lastRttMs: number | null
  lastPunchAt: number
  /** wait before the next background attempt; doubles on failure up to punchRetryMs */
  retryDelayMs: number
  punching: boolean
}

/** How long one dial may take across all paths before it fails. */
const DIAL_TIMEOUT_MS = 15_000
/** A connection on a worse path with no streams is closed once the better one is this old. */
const IDLE_RELAY_CLOSE_MS = 10_000

export interface OpenStreamOptions { signal?: AbortSignal, firstData?: Uint8Array }

/** The small interface other capabilities (proxy, socks5) use. */
export interface TunnelApi {
  /**
   * firstData: sent in the same flight as the protocol proposal (optimistic multistream-select,
   * optimistic-select.ts): a request/answer protocol saves a round trip. Resolves once the peer
   * accepted the protocol either way; UnsupportedProtocolError when it does not serve it.
   */
  openStream: (node: string, protocol: string, opts?: OpenStreamOptions) => Promise<Stream>
  /** maxStreams: concurrent streams per connection for this protocol, each way (default 1024) */
  handle: (protocol: string, handler: (stream: Stream, peer: { node: string, peerId: string }) => void, opts?: { maxStreams?: number }) => Promise<void>
}

export class Tunnel implements TunnelApi {
  readonly node: AgentNode
  private readonly opts: TunnelOptions
  private readonly socket: UdxSocket
  private readonly punches: PunchRegistry
  private relaySet!: RelaySet<RendezvousClient>
  private relayLinks!: RelayLinks
  private readonly peers = new Map<string, PeerState>()
  private readonly relayPeerIds: Set<string>
  private readonly connPaths = new Map<string, PathKind>()
  private readonly abort = new AbortController()
  private maintenanceTimer: NodeJS.Timeout | undefined
  private readonly log: Logger
  private readonly dialer: Dialer
  /** relayed connections this tunnel closed itself, and why (a ping on one names the cause) */
  private readonly relayDrops = new WeakMap<Connection, RelayDrop>()
  private lastRelayRestart: { relay: string, at: number } | null = null

  private constructor (opts: TunnelOptions, node: AgentNode, socket: UdxSocket) {
    this.opts = opts
    this.node = node
    this.socket = socket
    this.log = opts.log
    this.punches = new PunchRegistry(socket)
    this.dialer = new Dialer({
      node, punches: this.punches, config: opts.config, metrics: opts.metrics, log: opts.log,
      adopt: (conn, path) => { this.adopt(conn, path) },
      pathOf: (conn) => this.pathOf(conn)
    })
    this.relayPeerIds = new Set(opts.config.relays.map((r) => r.peerId))
  }

  static async start (opts: TunnelOptions): Promise<Tunnel> {
    const { config } = opts
    const udx = createUdx()
    const socket = udx.createSocket()
    try {
      socket.bind(config.listen.udpPort, config.listen.host)
    } catch (err: any) {
      throw new Error(`listen.udpPort: cannot bind UDP ${config.listen.host}:${config.listen.udpPort}: ${err.message}`)
    }
    const relayIds = new Set(config.relays.map((r) => r.peerId))
    const node = await createAgentNode({
      privateKey: opts.privateKey,
      listenHost: config.listen.host,
      tcpPort: config.listen.tcpPort,
      ...(opts.psk != null ? { psk: opts.psk } : {}),
      isAllowedPeer: (p) => relayIds.has(p.toString()) || opts.directory.byPeerId(p.toString()) != null,
      log: opts.log,
      metrics: opts.metrics
    })
    const tunnel = new Tunnel(opts, node, socket)
    exportTunnelStatus(opts.metrics, () => tunnel.status())
    node.services.dgram.attach(udx, socket, config.tunnel.keepaliveMs, (conn, path) => { tunnel.adopt(conn, path) }, (conn, path, reason, silentMs) => { tunnel.onDeadPath(conn, path, reason, silentMs) })
    await tunnel.init()
    return tunnel
  }

  private async init (): Promise<void> {
    const { config } = this.opts
    this.socket.on('message', (buf, from) => { this.onDatagram(buf, from) })
    const verifiers = new Map<string, (data: Uint8Array, signature: Uint8Array) => boolean>()
    for (const [i, relay] of config.relays.entries()) {
      try {
        verifiers.set(relay.peerId, ed25519Verifier(parsePeerId(relay.peerId, `relays[${i}].peerId`)))
      } catch (err: any) {
        throw new ConfigError(String(err.message).startsWith('relays[') ? err.message : `relays[${i}].peerId: ${err.message}`)
      }
    }
    this.relayLinks = new RelayLinks({
      node: this.node,
      relays: config.relays,
      home: () => this.relaySet.home,
      expectClose: (peerId) => { this.relaySet.expectClose(peerId) },
      onReservation: (peerId, ok) => { this.relaySet.onReservation(peerId, ok) },
      log: this.log,
      signal: this.abort.signal
    })
    this.relaySet = new RelaySet({
      selfPeerId: this.node.peerId.toString(),
      relays: config.relays,
      createClient: (relay) => this.createClient(relay, verifiers.get(relay.peerId)!),
      probe: async (relay) => await this.relayLinks.probe(relay),
      inUse: (relay) => this.relayUdpSessions(relay).length > 0,
      // the reservation moves with the home at once (not at the next maintenance tick)
      onHome: () => { if (this.maintenanceTimer != null) this.relayLinks.ensureReservation() },
      // found lost (its TCP connection closed and a re-dial refused): what went through it is gone
      onLost: (relay) => { this.dropRelaySessions(relay, 'relay-down') },
      unwatch: (relay) => { this.relayLinks.closeUnvisited(relay) },
      log: this.log.child({ component: 'relays' })
    })
    this.node.addEventListener('connection:open', (evt) => { this.onConnectionOpen(evt.detail) })
    this.node.addEventListener('connection:close', (evt) => { this.onConnectionClose(evt.detail) })
    this.relaySet.start()
    await this.node.handle(PING_PROTOCOL, (stream) => { void this.servePing(stream) }, { runOnLimitedConnection: true })
    this.maintenanceTimer = setInterval(() => { this.maintain() }, 1_000)
    this.maintenanceTimer.unref()
    this.maintain()
    // give registration a moment so the first dial can use UDP paths; never block start-up long
    await this.relaySet.homeClient?.waitUp(1_500)
  }

  /** Our conversation with one relay (home or visitor): started by the relay set. */
  private createClient (relay: RelayRef, verifyRelay: (data: Uint8Array, signature: Uint8Array) => boolean): RendezvousClient {
    const client = new RendezvousClient({
      relay,
      endpoint: { host: relay.host, port: relay.udpPort },
      socket: this.socket,
      privateKey: this.opts.privateKey,
      peerIdBytes: this.node.peerId.toMultihash().bytes,
      nodeName: this.opts.nodeName,
      candidates: () => this.localCandidates(),
      ...(this.opts.psk != null ? { psk: this.opts.psk } : {}),
      keepaliveMs: this.opts.config.tunnel.keepaliveMs,
      verifyRelay,
      log: this.log.child({ component: 'rendezvous' })
    })
    // introductions arrive through any relay we are registered with (home or visitor)
    client.on('incoming', (info) => { this.onIncoming(client, info) })
    client.on('restarted', () => {
      this.lastRelayRestart = { relay: endpointKey(client.endpoint), at: Date.now() }
      this.dropRelaySessions(relay, 'relay-restarted')
    })
    // a relay that stopped answering takes its relayed sessions with it: close them so new
    // streams redial (through another relay when there is one)
    client.on('state', (up) => { if (!up) this.dropRelaySessions(relay, 'relay-down') })
    return client
  }

  get peerId (): PeerId { return this.node.peerId }

  // ---------------------------------------------------------------- datagrams

  private onDatagram (buf: Buffer, from: Endpoint): void {
    const { metrics } = this.opts
    if (!looksLikeRendezvous(buf)) { metrics.droppedDatagrams.inc({ reason: 'not-rendezvous' }); return }
    // a relay's address can be spoofed: what claims to come from one is checked by its client
    const client = this.relaySet.clientAt(from)
    // another release (not an attack): counted under its own reason, and the client says so once
    if (versionOf(buf) !== VERSION) {
      client?.onOtherVersion(versionOf(buf))
      metrics.droppedDatagrams.inc({ reason: 'unsupported-version' })
      return
    }
    let decoded
    try {
      decoded = decodeMessage(buf)
    } catch (err) {
      if (client != null) client.onUndecodable(err as Error)
      metrics.droppedDatagrams.inc({ reason: client != null ? 'forged-relay-message' : 'malformed' })
      return
    }
    const m = decoded.message
    if (m.type === 'punch') {
      if (!this.punches.onPunch(m.session, m.ack, from)) metrics.droppedDatagrams.inc({ reason: 'unknown-session' })
      return
    }
    if (client == null || !isRelayMessage(m) || decoded.signed == null) { metrics.droppedDatagrams.inc({ reason: 'unexpected' }); return }
    const outcome = client.onMessage(m, decoded.signed)
    if (outcome !== 'handled') metrics.droppedDatagrams.inc({ reason: outcome === 'forged' ? 'forged-relay-message' : outcome === 'reordered' ? 'reordered-relay-message' : 'unexpected' })
  }

  /** LAN addresses (same UDP/TCP ports) offered to peers for same-site direct paths. */
  private localCandidates (): Candidate[] {
    const { listen, tunnel } = this.opts.config
    const hosts = new Set<string>(tunnel.advertise)
    if (listen.host === '0.0.0.0') {
      for (const a of localIPv4()) hosts.add(a.address)
    } else {
      hosts.add(listen.host)
    }
    const out: Candidate[] = []
    const udpPort = this.socket.address().port // the bound port (listen.udpPort may be 0)
    for (const host of [...hosts].slice(0, 7)) {
      out.push({ proto: 'udp', host, port: udpPort })
      out.push({ proto: 'tcp', host, port: this.tcpPort() })
    }
    return out
  }

  private tcpPort (): number {
    for (const ma of this.node.getMultiaddrs()) {
      const s = ma.toString()
      const m = /\/tcp\/(\d+)/.exec(s)
      if (m != null && !s.includes('p2p-circuit')) return Number(m[1])
    }
    return this.opts.config.listen.tcpPort
  }

  // ---------------------------------------------------------------- peers and connections

  private peerState (record: PeerRecord): PeerState {
    let s = this.peers.get(record.nodeName)
    if (s == null || s.record.peerId !== record.peerId) {
      s = { record, peerId: peerIdFromString(record.peerId), dialing: null, lastRttMs: null, lastPunchAt: 0, retryDelayMs: 2_000, punching: false }
      this.peers.set(record.nodeName, s)
    }
    return s
  }

  private pathOf (conn: Connection): PathKind | undefined {
    return this.connPaths.get(conn.id) ?? this.node.services.dgram.pathOf(conn)?.path ?? classifyLibp2pConnection(conn)
  }

  private onConnectionOpen (conn: Connection): void {
    if (this.relayPeerIds.has(conn.remotePeer.toString())) this.relaySet.onRelayConnection(conn.remotePeer.toString(), true)
    // UDX connections are labelled by the dgram transport once their upgrade returns (adopt)
    const path = this.pathOf(conn)
    if (path != null) this.adopt(conn, path)
  }

  adopt (conn: Connection, path: PathKind): void {
    if (this.connPaths.get(conn.id) === path) return
    this.connPaths.set(conn.id, path)
    this.updateConnectionGauge()
    const record = this.opts.directory.byPeerId(conn.remotePeer.toString())
    if (record != null) this.log.info({ peer: record.nodeName, path, remote: conn.remoteAddr.toString() }, 'tunnel path open')
  }

  /** A UDX path whose peer stopped answering (closed by the dgram transport) or never answered a handshake. */
  onDeadPath (conn: Connection | null, path: PathKind, reason: DeadPathReason, silentMs: number): void {
    this.opts.metrics.deadPaths.inc({ path, reason })
    if (conn == null) return // a leg of a dial: the dial says what became of it
    const record = this.opts.directory.byPeerId(conn.remotePeer.toString())
    this.log.info({ peer: record?.nodeName ?? conn.remotePeer.toString(), path, silentMs: Math.round(silentMs) }, 'tunnel path dead: the peer stopped answering; closing it so new streams dial afresh')
  }

  private onConnectionClose (conn: Connection): void {
    const remote = conn.remotePeer.toString()
    // the last connection to a relay gone (a killed relay closes them at once): a sign of its loss
    if (this.relayPeerIds.has(remote) && !this.node.getConnections(conn.remotePeer).some((c) => c.id !== conn.id && c.status === 'open')) {
      this.relaySet.onRelayConnection(remote, false)
    }
    const path = this.connPaths.get(conn.id)
    this.connPaths.delete(conn.id)
    this.updateConnectionGauge()
    const record = this.opts.directory.byPeerId(conn.remotePeer.toString())
    if (record != null && path != null) this.log.info({ peer: record.nodeName, path }, 'tunnel path closed')
  }

  private updateConnectionGauge (): void {
    const counts: Record<PathKind, number> = { 'direct-tcp': 0, 'direct-udp': 0, 'relay-udp': 0, 'relay-tcp': 0 }
    for (const conn of this.node.getConnections()) {
      if (this.relayPeerIds.has(conn.remotePeer.toString())) continue
      const p = this.connPaths.get(conn.id)
      if (p != null) counts[p]++
    }
    for (const [path, n] of Object.entries(counts)) this.opts.metrics.peerConnections.set({ path }, n)
  }

  /** Open connections to a peer, best path first. */
  private connectionsOf (peerId: PeerId): Array<{ conn: Connection, path: PathKind }> {
    const out: Array<{ conn: Connection, path: PathKind }> = []
    for (const conn of this.node.getConnections(peerId)) {
      if (conn.status !== 'open') continue
      if (muxerClosed(conn)) {
        // the peer's muxer sent GoAway (or ours failed) while the transport stayed up: no stream
        // can open on it any more, so it goes and the next stream dials afresh
        conn.abort(new Error('muxer closed'))
        continue
      }
      const path = this.pathOf(conn)
      if (path != null) out.push({ conn, path })
    }
    return out.sort((a, b) => pathRank(a.path) - pathRank(b.path) || a.conn.timeline.open - b.conn.timeline.open)
  }

  private resolve (nodeName: string): PeerState {
    const record = this.opts.directory.byName(nodeName)
    if (record == null) throw new Error(`unknown node "${nodeName}": not in the peer directory`)
    if (record.peerId === this.node.peerId.toString()) throw new Error(`"${nodeName}" is this node`)
    return this.peerState(record)
  }

  /** The best open connection to a node, dialing if there is none. */
  async connection (nodeName: string, signal?: AbortSignal): Promise<Connection> {
    return (await this.connectionWithOrigin(nodeName, signal)).conn
  }

  private async connectionWithOrigin (nodeName: string, signal?: AbortSignal): Promise<{ conn: Connection, origin: ConnectionOrigin }> {
    const state = this.resolve(nodeName)
    const best = this.connectionsOf(state.peerId)[0]
    if (best != null) return { conn: best.conn, origin: 'existing' }
    const origin = state.dialing == null ? 'dialled' : 'joined'
    state.dialing ??= this.dial(state).finally(() => { state.dialing = null })
    const conn = signal == null ? await state.dialing : await Promise.race([state.dialing, abortPromise(signal)])
    return { conn, origin }
  }

  async openStream (nodeName: string, protocol: string, opts: OpenStreamOptions = {}): Promise<Stream> {
    const conn = await this.connection(nodeName, opts.signal)
    const signalOpt = opts.signal != null ? { signal: opts.signal } : {}
    if (opts.firstData != null) {
      const muxer = muxerOf(conn)
      if (muxer != null) return await openOptimistic(muxer, protocol, opts.firstData, signalOpt)
      // a closing connection: newStream() fails as usual
      const stream = await conn.newStream(protocol, { runOnLimitedConnection: true, ...signalOpt })
      stream.send(opts.firstData)
      return stream
    }
    return await conn.newStream(protocol, { runOnLimitedConnection: true, ...signalOpt })
  }

  async handle (protocol: string, handler: (stream: Stream, peer: { node: string, peerId: string }) => void, opts: { maxStreams?: number } = {}): Promise<void> {
    const wrapped: StreamHandler = (stream, conn) => {
      const peerId = conn.remotePeer.toString()
      const record = this.opts.directory.byPeerId(peerId)
      if (record == null) { stream.abort(new Error('unknown peer')); return }
      handler(stream, { node: record.nodeName, peerId })
    }
    await this.node.handle(protocol, wrapped, { runOnLimitedConnection: true, maxInboundStreams: opts.maxStreams ?? 1024, maxOutboundStreams: opts.maxStreams ?? 1024 })
  }

  /**
   * A connection to a node and its path: the best one, or (diagnostics) a fresh connection to
   * an explicit multiaddr such as a port-forwarded TCP address.
   */
  async connectionVia (nodeName: string, via?: string): Promise<{ conn: Connection, path: PathKind, remote: string }> {
    if (via == null) {
      const conn = await this.connection(nodeName)
      return { conn, path: this.pathOf(conn) ?? 'relay-tcp', remote: remoteOf(conn, this.node.services.dgram.pathOf(conn)?.remote) }
    }
    const state = this.resolve(nodeName)
    const ma = multiaddr(via.includes('/p2p/') ? via : `${via}/p2p/${state.peerId.toString()}`)
    const conn = await this.dialer.dialTcp(ma, state.peerId, AbortSignal.timeout(DIAL_TIMEOUT_MS))
    return { conn, path: this.pathOf(conn) ?? 'direct-tcp', remote: remoteOf(conn, undefined) }
  }

  /** Closes every connection to a node (the next stream dials afresh). */
  async disconnect (nodeName: string): Promise<void> {
    const state = this.resolve(nodeName)
    await Promise.all(this.node.getConnections(state.peerId).map(async (c) => { await c.close().catch(() => c.abort(new Error('disconnect'))) }))
  }

  // ---------------------------------------------------------------- dialing

  /** The relays to reach a peer through: its home relay (published, or computed) first. */
  private routeTo (state: PeerState): RelayRoute {
    const relays = this.relaySet.routeTo(state.record.peerId, state.record.homeRelay)
    return {
      introducers: relays.map((relay) => ({ relay, client: async () => await this.relaySet.introducer(relay) })),
      circuits: relays
    }
  }

  private async dial (state: PeerState): Promise<Connection> {
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(DIAL_TIMEOUT_MS)])
    const target = { nodeName: state.record.nodeName, peerId: state.peerId, addresses: state.record.addresses, advertised: state.record.advertised ?? [] }
    return await this.dialer.dialUntilConnected(target, () => this.routeTo(state), signal)
  }

  /** The relay introduced a peer that wants to reach us: run our side of every leg. */
  private onIncoming (client: RendezvousClient, info: PeerInfoMessage): void {
    let peerId: PeerId
    try { peerId = peerIdFromBytes(info.peer) } catch { this.opts.metrics.droppedDatagrams.inc({ reason: 'bad-peer-id' }); return }
    const record = this.opts.directory.byPeerId(peerId.toString())
    if (record == null) {
      this.opts.metrics.rejectedConnections.inc({ reason: 'unknown-peer' })
      this.log.warn({ peer: peerId.toString(), claimedName: info.peerName }, 'refused introduction from unknown peer (not in the peer directory)')
      return
    }
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(DIAL_TIMEOUT_MS)])
    this.dialer.startLegs(client, info, peerId, signal)
  }

  // ---------------------------------------------------------------- background work

  /** Runs every second: circuit reservations, background punching, idle relay cleanup. */
  private maintain (): void {
    this.relayLinks.ensureReservation()
    const now = Date.now()
    for (const state of this.peers.values()) {
      const conns = this.connectionsOf(state.peerId)
      if (conns.length === 0) continue
      const best = conns[0]!
      if (!isDirect(best.path)) this.retryPunch(state, now, best)
      // connections on worse paths that carry no streams are closed once the better one has
      // been up a while (streams already on them finish where they are)
      for (const { conn, path } of conns.slice(1)) {
        if (pathRank(path) > pathRank(best.path) && conn.streams.length === 0 &&
            now - best.conn.timeline.open > IDLE_RELAY_CLOSE_MS) {
          conn.close().catch(() => {})
        }
      }
    }
  }

  /**
   * While a peer is only relayed: ask for a new introduction and punch again. If all we have
   * is relay-tcp (for example after a relay restart), also take a UDP relay leg: it is faster.
   */
  private retryPunch (state: PeerState, now: number, { conn: bestConn, path: best }: { conn: Connection, path: PathKind }): void {
    // relay-tcp only (say, after a relay restart): a UDP relay leg is worth asking for soon;
    // otherwise punching is retried every punchRetryMs
    const interval = best === 'relay-tcp' ? state.retryDelayMs : this.opts.config.tunnel.punchRetryMs
    if (this.relaySet.homeClient?.up !== true || state.punching || now - state.lastPunchAt < interval) return
    // asked of the relay our relay-udp path goes through (both sides are registered there), else
    // of the peer's home relay (a UDP-blocked site has no client up anywhere: nothing to ask)
    const relayedVia = best === 'relay-udp' ? this.node.services.dgram.pathOf(bestConn)?.remote : undefined
    const through = relayedVia != null ? this.relaySet.clientAt(relayedVia) : undefined
    const relay = this.relaySet.routeTo(state.record.peerId, state.record.homeRelay)[0]
    if (relay == null) return
    state.punching = true
    state.lastPunchAt = now
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(DIAL_TIMEOUT_MS)])
    const introducer = through?.up === true ? Promise.resolve(through) : this.relaySet.introducer(relay)
    introducer
      .then(async (client) => {
        if (client == null) throw new Error('no registration at the peer\'s home relay')
        const info = await client.connect(state.peerId.toMultihash().bytes, best === 'relay-tcp', 2_000, signal)
        await Promise.any(this.dialer.startLegs(client, info, state.peerId, signal).all)
      })
      .then(() => {
        state.retryDelayMs = 2_000
        this.log.debug({ peer: state.record.nodeName }, 'background attempt opened a better path')
      })
      .catch(() => {
        // a UDP-blocked peer stays so for a while: back off instead of asking every 2 s
        state.retryDelayMs = Math.min(state.retryDelayMs * 2, this.opts.config.tunnel.punchRetryMs)
      })
      .finally(() => { state.punching = false })
  }

  /** relay-udp connections through this relay */
  private relayUdpSessions (relay: RelayRef): Connection[] {
    const key = endpointKey({ host: relay.host, port: relay.udpPort })
    return this.node.getConnections().filter((conn) => {
      const p = this.node.services.dgram.pathOf(conn)
      return p?.path === 'relay-udp' && endpointKey(p.remote) === key
    })
  }

  /** A restarted (or lost) relay lost every blind relay pair: close our sessions through it so streams redial. */
  private dropRelaySessions (relay: RelayRef, reason: RelayDrop['reason']): void {
    const key = endpointKey({ host: relay.host, port: relay.udpPort })
    for (const conn of this.relayUdpSessions(relay)) {
      // recorded first: the abort wakes whoever is waiting on this connection
      this.relayDrops.set(conn, { relay: key, reason })
      conn.abort(new Error(reason === 'relay-restarted' ? 'relay restarted' : 'relay stopped answering'))
    }
  }

  // ---------------------------------------------------------------- status and ping

  private async servePing (stream: Stream): Promise<void> {
    try {
      for await (const chunk of readStream(stream)) await send(stream, chunk)
      await stream.close()
    } catch (err) {
      stream.abort(err as Error)
    }
  }

  /**
   * Pings a node, timing every phase: getting a connection (open or dialled), opening the ping
   * stream, each round trip, the whole. A connection that went away under the ping (closed by
   * our own relay-restart handling, or an open one that died) gets one retry on a fresh one.
   */
  async ping (nodeName: string, opts: { count?: number, signal?: AbortSignal } = {}): Promise<PingResult> {
    const state = this.resolve(nodeName)
    const count = opts.count ?? 3
    if (!Number.isInteger(count) || count < 1) throw new Error(`ping: count must be a positive integer, not ${count}`)
    const t0 = performance.now()
    // an operator's action, one line each: also the moment a test knows the ping is under way
    this.log.info({ peer: nodeName, count }, 'ping: started')
    const first = await this.pingAttempt(nodeName, count, t0, opts.signal)
    let result: PingResult
    if ('result' in first) {
      result = first.result
    } else {
      if (!first.failure.retry || opts.signal?.aborted === true) throw new Error(`ping ${nodeName}: ${first.failure.message} [${first.phases}]`)
      this.log.info({ peer: nodeName, cause: first.failure.cause }, 'ping: retrying on a fresh connection')
      const second = await this.pingAttempt(nodeName, count, t0, opts.signal)
      if (!('result' in second)) {
        throw new Error(`ping ${nodeName}: ${first.failure.message}; a retry on a fresh connection failed too: ${second.failure.message} [${second.phases}]`)
      }
      result = { ...second.result, retriedAfter: first.failure.message, failedAttemptMs: round(first.ms) }
    }
    state.lastRttMs = result.rttMs
    return result
  }

  private async pingAttempt (nodeName: string, count: number, t0: number, signal?: AbortSignal): Promise<{ result: PingResult } | { failure: PingFailure, phases: string, ms: number }> {
    const started = performance.now()
    let phase: PingPhase = 'connect'
    let conn: Connection | undefined
    let origin: ConnectionOrigin | undefined
    let connectMs: number | undefined
    let streamOpenMs: number | undefined
    let path: PathKind | undefined
    let remote: string | undefined
    let stream: Stream | undefined
    try {
      ({ conn, origin } = await this.connectionWithOrigin(nodeName, signal))
      connectMs = performance.now() - started
      path = this.pathOf(conn) ?? 'relay-tcp'
      remote = remoteOf(conn, this.node.services.dgram.pathOf(conn)?.remote)
      phase = 'stream'
      const streamStarted = performance.now()
      stream = await conn.newStream(PING_PROTOCOL, { runOnLimitedConnection: true, ...(signal != null ? { signal } : {}) })
      streamOpenMs = performance.now() - streamStarted
      phase = 'echo'
      const rtts = await echoProbes(stream, count, signal)
      await stream.close()
      return {
        result: {
          node: nodeName, path, remote, ...rttSummary(rtts), rttsMs: rtts.map(round),
          connectMs: round(connectMs), connection: origin, streamOpenMs: round(streamOpenMs), totalMs: round(performance.now() - t0)
        }
      }
    } catch (err: any) {
      stream?.abort(err instanceof Error ? err : new Error(String(err)))
      const restart = this.lastRelayRestart
      const drop = conn != null ? this.relayDrops.get(conn) : undefined
      const failure = explainPingFailure({
        node: nodeName,
        phase,
        error: err?.message ?? String(err),
        timedOut: signal?.aborted === true,
        connectionOpen: conn?.status === 'open',
        ...(origin != null ? { connection: origin } : {}),
        ...(path != null ? { path } : {}),
        ...(remote != null ? { remote } : {}),
        ...(drop != null ? { droppedByUs: drop } : {}),
        ...(restart != null && Date.now() - restart.at < RECENT_RESTART_MS ? { recentRelayRestart: { relay: restart.relay, agoMs: Date.now() - restart.at } } : {})
      })
      const ms = performance.now() - started
      const phases = formatFailedPhases({
        ...(connectMs != null ? { connectMs } : {}),
        ...(origin != null ? { connection: origin } : {}),
        ...(streamOpenMs != null ? { streamOpenMs } : {}),
        totalMs: ms
      })
      return { failure, phases, ms }
    }
  }

  status (): { node: string, peerId: string, relays: RelayStatus[], peers: PeerStatus[] } {
    const addrs = this.node.getMultiaddrs().map(String)
    const relays: RelayStatus[] = this.relaySet.view().map(({ relay, role, client: c }) => ({
      host: relay.host,
      peerId: relay.peerId,
      role,
      udp: c?.up === true ? 'up' : 'down',
      observed: c?.observed != null ? endpointKey(c.observed) : null,
      circuit: addrs.some((a) => a.includes(`/p2p/${relay.peerId}/p2p-circuit`)) ? 'reserved' : 'none',
      rttMs: c?.lastRttMs ?? null
    }))
    const peers: PeerStatus[] = []
    for (const record of this.opts.directory.list()) {
      if (record.peerId === this.node.peerId.toString()) continue
      const state = this.peerState(record)
      const conns = this.connectionsOf(state.peerId)
      const best = conns[0]
      peers.push({
        node: record.nodeName,
        peerId: record.peerId,
        path: best?.path ?? 'idle',
        remote: best != null ? remoteOf(best.conn, this.node.services.dgram.pathOf(best.conn)?.remote) : null,
        rttMs: state.lastRttMs,
        paths: conns.map(({ conn, path }) => {
          const udx = this.node.services.dgram.stats(conn)
          return { path, remote: remoteOf(conn, this.node.services.dgram.pathOf(conn)?.remote), streams: conn.streams.length, openedAt: conn.timeline.open, ...(udx != null ? { udx } : {}) }
        })
      })
    }
    return { node: this.opts.nodeName, peerId: this.node.peerId.toString(), relays, peers }
  }

  async stop (): Promise<void> {
    this.abort.abort(new Error('tunnel stopping'))
    clearInterval(this.maintenanceTimer)
    this.relaySet.stop()
    await this.node.stop()
    await this.socket.close()
  }
}

function muxerClosed (conn: Connection): boolean {
  const status = (conn as unknown as { muxer?: { status?: string } }).muxer?.status
  return status != null && status !== 'open'
}

function remoteOf (conn: Connection, udx: Endpoint | undefined): string {
  if (udx != null) return endpointKey(udx)
  const s = conn.remoteAddr.toString()
  const m = /^\/ip[46]\/([^/]+)\/tcp\/(\d+)/.exec(s)
  if (m == null) return s
  return s.includes('/p2p-circuit') ? `${m[1]}:${m[2]} (circuit)` : `${m[1]}:${m[2]}`
}

/** Sends `count` 16-byte probes one after another; returns each round trip in ms. */
async function echoProbes (stream: Stream, count: number, signal?: AbortSignal): Promise<number[]> {
  const onAbort = (): void => { stream.abort(signal?.reason instanceof Error ? signal.reason : new Error('aborted')) }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    if (signal?.aborted === true) onAbort()
    const it = readStream(stream)[Symbol.asyncIterator]()
    const carry: { rest?: Uint8Array } = {}
    const rtts: number[] = []
    for (let i = 0; i < count; i++) {
      const probe = randomBytes(16)
      const t = performance.now()
      await send(stream, probe)
      const echoed = await readExactly(it, 16, carry)
      if (!Buffer.from(echoed).equals(probe)) throw new Error('corrupted echo')
      rtts.push(performance.now() - t)
    }
    return rtts
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
}

async function abortPromise (signal: AbortSignal): Promise<never> {
  return await new Promise((_resolve, reject) => {
    if (signal.aborted) { reject(signal.reason); return }
    signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
  })
}
