// The relay's libp2p host: TCP listener with circuit relay v2, for agents whose site blocks UDP.
// Limits: reservations in total and per source IP (libp2p keeps one per peer id), and each
// relayed circuit closed after circuitDurationSeconds or circuitDataBytes. libp2p's own default
// (2 min, 128 KiB per circuit) cut every relayed tunnel within seconds (yamux and pings alone
// pass 128 KiB), so the defaults here are a day and 64 GiB: far beyond what a tunnel's streams
// carry in normal use, but a bound on what one circuit can cost. A circuit that reaches either
// is closed and the agent dials a new one for its next stream.
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { meshYamux } from '../shared/yamux.ts'
import { noiseCrypto } from '../shared/noise-crypto.ts'
import { identify } from '@libp2p/identify'
import { preSharedKey } from '@libp2p/pnet'
import { circuitRelayServer, type CircuitRelayService } from '@libp2p/circuit-relay-v2'
import { peerIdFromString } from '@libp2p/peer-id'
import type { ComponentLogger, Connection, Logger as Libp2pLogger, PeerId, PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from '../shared/logging.ts'
import type { Metrics } from '../shared/metrics.ts'
import type { ServerConfig } from '../shared/config.ts'
import { GroupLimiter, KeyedCounter, createRefuse, type Refuse } from './limits.ts'
import { joinCircuitsWithBackpressure } from './circuit-join.ts'
import { startLivenessSweep } from './connection-liveness.ts'
import { HOP_HANDSHAKE_TIMEOUT_MS, MAX_HOP_HANDSHAKES, MAX_HOP_HANDSHAKES_PER_CONNECTION, hopHandshakeGate, limitHopHandshakes } from './hop-handshakes.ts'

export type CircuitLimits = Pick<ServerConfig['limits'], 'maxReservations' | 'reservationTtlSeconds' | 'circuitDurationSeconds' | 'circuitDataBytes'> & {
  /** resolved (server/limits.ts perIpLimits) */
  maxReservationsPerIp: number
}

/** libp2p's connection manager limits (server/limits.ts connectionLimits) */
export interface ConnectionLimits {
  maxConnections: number
  inboundConnectionThreshold: number
  maxIncomingPendingConnections: number
  /** TCP connections one source IP may hold open, pending upgrades included; unset: maxConnections */
  maxConnectionsPerIp?: number
}

export interface RelayHostOptions {
  privateKey: PrivateKey
  host: string
  tcpPort: number
  announce: string[]
  psk?: Uint8Array
  limits: CircuitLimits
  connections: ConnectionLimits
  log: Logger
  metrics: Metrics
}

/** The longest timer Node keeps (AbortSignal.timeout fires at once beyond it). */
const MAX_TIMER_MS = 2 ** 31 - 1
/** uint64 on the wire */
const NO_DATA_LIMIT = 2n ** 63n - 1n

/**
 * libp2p's reservation options for our limits. libp2p applies duration and data together or
 * neither; a 0 ("no limit") for one of them becomes its largest value. Its duration is in ms.
 */
export function reservationOptions (l: Omit<CircuitLimits, 'maxReservationsPerIp'>): { maxReservations: number, reservationTtl: number, applyDefaultLimit: boolean, defaultDurationLimit: number, defaultDataLimit: bigint } {
  const unlimited = l.circuitDurationSeconds === 0 && l.circuitDataBytes === 0
  return {
    maxReservations: l.maxReservations,
    reservationTtl: l.reservationTtlSeconds * 1000,
    applyDefaultLimit: !unlimited,
    defaultDurationLimit: l.circuitDurationSeconds === 0 ? MAX_TIMER_MS : Math.min(MAX_TIMER_MS, l.circuitDurationSeconds * 1000),
    defaultDataLimit: l.circuitDataBytes === 0 ? NO_DATA_LIMIT : BigInt(l.circuitDataBytes)
  }
}

/** The IP address of a multiaddr (/ip4/a.b.c.d/tcp/...), or its text when it has none. */
export function ipOf (addr: Multiaddr): string {
  const c = addr.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6')
  return c?.value ?? addr.toString()
}

/**
 * Counts (and logs, throttled) every inbound connection that fails its upgrade: without the
 * mesh's PSK the pnet stream decrypts to garbage and the noise handshake fails. libp2p reports
 * these only on its debug channel.
 */
function countFailedUpgrades (node: Libp2p, refuse: Refuse): void {
  const upgrader = (node as any).components.upgrader
  const inbound = upgrader.upgradeInbound.bind(upgrader)
  upgrader.upgradeInbound = async (maConn: { remoteAddr?: Multiaddr }, o: { signal?: AbortSignal } | undefined) => {
    try {
      return await inbound(maConn, o)
    } catch (err: any) {
      const name = String(err?.name ?? '')
      if (o?.signal?.aborted !== true && name !== 'AbortError' && name !== 'ConnectionDeniedError') {
        refuse('circuit-handshake', { remote: maConn.remoteAddr?.toString(), err: err?.message })
      }
      throw err
    }
  }
}

/**
 * Counts the TCP connections libp2p's connection manager turns away before any handshake (it
 * logs them only on its debug channel): too many upgrades pending, the source IP over its new
 * connections per second, or maxConnections open. The reason is read from the manager's state
 * as its own check does, in its order.
 */
function countRefusedConnections (node: Libp2p, refuse: Refuse, limits: ConnectionLimits): void {
  const manager = (node as any).components.connectionManager
  const accept = manager.acceptIncomingConnection.bind(manager)
  const perIp = openConnectionsPerIp(limits.maxConnectionsPerIp ?? limits.maxConnections, refuse)
  manager.acceptIncomingConnection = (maConn: InboundConnection): boolean => perIp.admit(maConn, () => {
    const pending: number = manager.incomingPendingConnections
    if (accept(maConn) === true) return true
    const ip = ipOf(maConn.remoteAddr)
    const reason = pending >= limits.maxIncomingPendingConnections
      ? 'circuit-connections-pending'
      : node.getConnections().length >= limits.maxConnections ? 'circuit-connections-total' : 'circuit-connections-per-ip-rate'
    refuse(reason, { ip })
    return false
  })
}

/** What the per-IP gate needs of an inbound TCP connection (libp2p's MultiaddrConnection). */
export interface InboundConnection {
  remoteAddr: Multiaddr
  status: string
  addEventListener: (type: 'close', listener: () => void, options: { once: true }) => void
}

/**
 * At most `max` inbound TCP connections open per source IP, counted from acceptance (so
 * pending upgrades count) until the connection closes, whatever ends it. Checked before
 * libp2p's own accept, which counts a pending upgrade once it says yes.
 */
export function openConnectionsPerIp (max: number, refuse: Refuse): {
  admit: (maConn: InboundConnection, accept: () => boolean) => boolean
  countOf: (ip: string) => number
} {
  const open = new KeyedCounter(max)
  return {
    admit (maConn, accept) {
      const ip = ipOf(maConn.remoteAddr)
      if (open.count(ip) >= max) {
        refuse('circuit-connections-per-ip', { ip, connections: open.count(ip) })
        return false
      }
      if (!accept()) return false
      // closed already (its close event has fired): nothing to count
      if (maConn.status !== 'open' || !open.tryAcquire(ip)) return true
      maConn.addEventListener('close', () => { open.release(ip) }, { once: true })
      return true
    },
    countOf: (ip) => open.count(ip)
  }
}

/**
 * libp2p's debug logging, off: one shared logger that does nothing. libp2p makes new debug
 * loggers (three functions with their properties each) for every connection, stream and
 * scope, whether DEBUG is set or not: a few KiB of heap per agent on a relay holding
 * thousands. With DEBUG set (libp2p:*) the library's own logger is used, as before.
 */
export function quietLibp2pLogger (): ComponentLogger {
  const log = Object.assign((() => {}) as unknown as Libp2pLogger, { error: () => {}, trace: () => {}, enabled: false })
  log.newScope = () => log
  return { forComponent: () => log }
}

/** What the reservation gate needs of libp2p's reservation store (peer ids as strings). */
export interface Reservations { has: (peer: string) => boolean, size: number }

/**
 * Decides each new reservation (true: deny): the total, then at most maxReservationsPerIp per
 * source IP. Refreshes always pass. The per-IP index forgets peers whose reservation expired:
 * those of the IP being checked at once, and all of them whenever it holds more than twice the
 * total a relay can grant, so peers cycling ids from many IPs cannot grow it without bound.
 */
export function reservationGate (limits: Pick<CircuitLimits, 'maxReservations' | 'maxReservationsPerIp'>, refuse: Refuse): {
  deny: (peer: string, ip: string, reserved: Reservations) => boolean
  /** peers in the per-IP index (for tests) */
  readonly tracked: number
} {
  const perIp = new GroupLimiter(limits.maxReservationsPerIp)
  const bound = 2 * limits.maxReservations
  return {
    deny (peer, ip, reserved) {
      if (reserved.has(peer)) return false
      if (reserved.size >= limits.maxReservations) {
        refuse('circuit-reservations-total', { peer, ip, reservations: reserved.size })
        return true
      }
      // members whose reservation expired (or was never granted) no longer count
      perIp.prune(ip, (p) => reserved.has(p))
      if (perIp.size >= bound) perIp.pruneAll((p) => reserved.has(p))
      if (perIp.check(peer, ip) !== 'ok') {
        refuse('circuit-reservations-per-ip', { peer, ip, reservations: perIp.countOf(ip) })
        return true
      }
      perIp.set(peer, ip)
      return false
    },
    get tracked () { return perIp.size }
  }
}

export async function startRelayHost (opts: RelayHostOptions): Promise<Libp2p<{ relay: CircuitRelayService }>> {
  const refuse = createRefuse((reason) => { opts.metrics.relayRefusals.inc({ reason }) }, (d, msg) => { opts.log.warn(d, msg) })
  const gate = reservationGate(opts.limits, refuse)
  let node: Libp2p<{ relay: CircuitRelayService }> | undefined

  /** Reservations beyond the limits are refused (PERMISSION_DENIED); refreshes always pass. */
  const denyReservation = (peer: PeerId): boolean => {
    const relay = node?.services.relay
    if (node == null || relay == null) return true
    const reserved = relay.reservations
    const conn: Connection | undefined = node.getConnections(peer).find((c) => !c.remoteAddr.toString().includes('/p2p-circuit'))
    const ip = conn != null ? ipOf(conn.remoteAddr) : 'unknown'
    return gate.deny(peer.toString(), ip, { has: (p) => reserved.has(peerIdFromString(p)), size: reserved.size })
  }

  node = await createLibp2p({
    privateKey: opts.privateKey,
    ...(process.env.DEBUG == null || process.env.DEBUG === '' ? { logger: quietLibp2pLogger() } : {}),
    addresses: {
      listen: [`/ip4/${opts.host}/tcp/${opts.tcpPort}`],
      // without announce, reservations would hand agents 127.0.0.1/LAN circuit addresses
      announce: opts.announce.map((a) => `/ip4/${a}/tcp/${opts.tcpPort}`)
    },
    transports: [tcp()],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [meshYamux()], // window <= read buffer: see shared/yamux.ts
    ...(opts.psk != null ? { connectionProtector: preSharedKey({ psk: opts.psk }) } : {}),
    connectionManager: { maxConnections: opts.connections.maxConnections, inboundConnectionThreshold: opts.connections.inboundConnectionThreshold, maxIncomingPendingConnections: opts.connections.maxIncomingPendingConnections },
    // its ping of every connection at once stalled the relay: server/connection-liveness.ts instead
    connectionMonitor: { enabled: false },
    connectionGater: { denyDialMultiaddr: () => false, denyInboundRelayReservation: denyReservation },
    services: {
      // the relay answers identify (agents learn it speaks circuit relay) but asks no agent:
      // nothing here reads an agent's identify (reservations and circuits use the connection),
      // and each answer cost a stream and a peer store record per agent
      identify: identify({ runOnConnectionOpen: false }),
      relay: circuitRelayServer({
        reservations: reservationOptions(opts.limits),
        maxInboundHopStreams: 4096,
        hopTimeout: HOP_HANDSHAKE_TIMEOUT_MS,
        maxOutboundStopStreams: 4096
      })
    }
  })
  countFailedUpgrades(node, refuse)
  countRefusedConnections(node, refuse, opts.connections)
  const stopLiveness = startLivenessSweep(() => node.getConnections(), opts.log)
  node.addEventListener('stop', stopLiveness, { once: true })
  // the library's own join keeps every byte the dialer sends: see circuit-join.ts
  joinCircuitsWithBackpressure(node.services.relay, opts.log)
  // idle HOP streams cost ~43 KiB each until the hop timeout: see hop-handshakes.ts
  await limitHopHandshakes((node as any).components.registrar, hopHandshakeGate({ perConnection: MAX_HOP_HANDSHAKES_PER_CONNECTION, total: MAX_HOP_HANDSHAKES }, refuse))
  releaseReservationsOfGonePeers(node)
  return node
}

/**
 * libp2p keeps a reservation until its TTL (an hour) after its holder is gone: an agent that
 * moved to another home relay (or left) still counted against the caps, and its one-hour
 * timer stayed. A circuit to a peer with no connection fails anyway (NO_RESERVATION), so the
 * reservation goes with the holder's last connection; an agent that comes back re-reserves
 * on connecting, as it does after a relay restart.
 */
export function releaseReservationsOfGonePeers (node: Libp2p<{ relay: CircuitRelayService }>): void {
  node.addEventListener('peer:disconnect', (evt) => {
    const reservations = node.services.relay.reservations
    const gone = reservations.get(evt.detail)
    if (gone == null) return
    gone.signal.clear()
    reservations.delete(evt.detail)
  })
}
