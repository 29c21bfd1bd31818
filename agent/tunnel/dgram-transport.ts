// The dgram transport: libp2p connections over UDX streams on the agent's one UDP socket.
// Path discovery (rendezvous, punching) lives elsewhere; this piece only turns a connected UDX
// stream into an upgraded libp2p connection (pnet if configured, noise, yamux) through the
// node's own upgrader, so the result is an ordinary libp2p Connection. It is registered as a
// libp2p service to receive the node's typed components.
import { multiaddr } from '@multiformats/multiaddr'
import type { ComponentLogger, Connection, PeerId, Upgrader } from '@libp2p/interface'
import { createSinkStream, type Udx, type UdxSocket, type UdxStream } from '../../shared/udx.ts'
import type { Endpoint } from '../../shared/wire/addr.ts'
import { UdxConnection } from './udx-connection.ts'
import type { PathKind } from './paths.ts'
import { LivenessMonitor } from './liveness.ts'

/**
 * A leg whose peer sent nothing at all within this long is abandoned: a peer that is not there
 * (its agent restarting, a stale registration at the relay) would otherwise hold the handshake
 * until the UDX timeout (~13 s). A live peer's first packet comes within one UDX retransmit (1 s).
 */
export const HANDSHAKE_ANSWER_MS = 2_500

/** Why a UDX path was given up (edgemesh_tunnel_dead_paths_total{reason}). */
export type DeadPathReason = 'silent' | 'no-answer'

export interface DgramTransportComponents {
  upgrader: Upgrader
  logger: ComponentLogger
}

export interface UdxPathStats {
  rttMs: number
  cwndPackets: number
  inflightBytes: number
  mtu: number
  retransmits: number
  packetsSent: number
  packetsReceived: number
  bytesSent: number
  bytesReceived: number
}

export interface UdxDial {
  remotePeer: PeerId
  remote: Endpoint
  localId: number
  remoteId: number
  /** the side that initiated the rendezvous runs the noise initiator role */
  initiator: boolean
  path: Extract<PathKind, 'direct-udp' | 'relay-udp'>
  signal: AbortSignal
  /** a silence this explains is not the peer's (liveness.ts `excused`): a relayed path's relay not answering either */
  silenceExcused?: (silentMs: number) => boolean
}

export class DgramTransport {
  private readonly components: DgramTransportComponents
  private udx: Udx | undefined
  private socket: UdxSocket | undefined
  private keepaliveMs = 5_000
  /** path labels of UDX connections, by libp2p connection id */
  private readonly paths = new Map<string, { path: PathKind, remote: Endpoint, stream: UdxStream }>()
  private readonly liveness = new LivenessMonitor()
  private onDeadPath: (conn: Connection | null, path: PathKind, reason: DeadPathReason, silentMs: number) => void = () => {}

  constructor (components: DgramTransportComponents) {
    this.components = components
  }

  /** The socket is created by the tunnel (it also carries rendezvous traffic). */
  private onConnection: (conn: Connection, path: PathKind) => void = () => {}

  attach (udx: Udx, socket: UdxSocket, keepaliveMs: number, onConnection: (conn: Connection, path: PathKind) => void,
    onDeadPath?: (conn: Connection | null, path: PathKind, reason: DeadPathReason, silentMs: number) => void): void {
    this.udx = udx
    this.socket = socket
    this.keepaliveMs = keepaliveMs
    this.onConnection = onConnection
    if (onDeadPath != null) this.onDeadPath = onDeadPath
  }

  // libp2p starts and stops services that have both
  start (): void {}
  stop (): void { this.liveness.stop() }

  pathOf (conn: Connection): { path: PathKind, remote: Endpoint } | undefined {
    return this.paths.get(conn.id)
  }

  /** Transport-level numbers of a UDX connection (for `edgemesh status --json`). */
  stats (conn: Connection): UdxPathStats | undefined {
    const s = this.paths.get(conn.id)?.stream as any
    if (s == null) return undefined
    return {
      rttMs: s.rtt, cwndPackets: s.cwnd, inflightBytes: s.inflight, mtu: s.mtu, retransmits: s.retransmits,
      packetsSent: s.packetsTransmitted, packetsReceived: s.packetsReceived, bytesSent: s.bytesTransmitted, bytesReceived: s.bytesReceived
    }
  }

  async dial (d: UdxDial): Promise<Connection> {
    if (this.udx == null || this.socket == null) throw new Error('dgram transport not attached')
    const stream = createSinkStream(this.udx, d.localId)
    stream.connect(this.socket, d.remoteId, d.remote.port, d.remote.host)
    // keepalives hold NAT mappings open (UDP conntrack forgets after 30 s) and detect dead paths
    stream.setKeepalive(this.keepaliveMs)
    const remoteAddr = multiaddr(`/ip${d.remote.host.includes(':') ? 6 : 4}/${d.remote.host}/udp/${d.remote.port}/p2p/${d.remotePeer.toString()}`)
    const maConn = new UdxConnection({
      stream,
      remoteAddr,
      direction: d.initiator ? 'outbound' : 'inbound',
      log: this.components.logger.forComponent(`edgemesh:udx:${d.path}`)
    })
    const noAnswer = new AbortController()
    const answerTimer = setTimeout(() => {
      if (stream.packetsReceived > 0) return
      this.onDeadPath(null, d.path, 'no-answer', HANDSHAKE_ANSWER_MS)
      noAnswer.abort(new Error(`${d.path}: the peer sent nothing within ${HANDSHAKE_ANSWER_MS} ms`))
    }, HANDSHAKE_ANSWER_MS)
    try {
      // upgradeOutbound returns the Connection for both roles; initiator:false makes us the
      // noise responder and multistream listener
      const conn = await this.components.upgrader.upgradeOutbound(maConn, { signal: AbortSignal.any([d.signal, noAnswer.signal]), initiator: d.initiator })
      this.paths.set(conn.id, { path: d.path, remote: d.remote, stream })
      const unwatch = this.watch(conn, d.path, stream, d.silenceExcused)
      conn.addEventListener('close', () => { this.paths.delete(conn.id); unwatch() }, { once: true })
      this.onConnection(conn, d.path)
      return conn
    } catch (err) {
      stream.destroy()
      throw noAnswer.signal.aborted && !d.signal.aborted ? noAnswer.signal.reason : err
    } finally {
      clearTimeout(answerTimer)
    }
  }

  /** Liveness (liveness.ts): udx packets (acks included) are the evidence, a yamux ping the probe. */
  private watch (conn: Connection, path: PathKind, stream: UdxStream, excused?: (silentMs: number) => boolean): () => void {
    const muxer = (conn as unknown as { muxer?: { ping?: () => Promise<number> } }).muxer
    return this.liveness.watch({
      received: () => stream.packetsReceived,
      probe: () => { muxer?.ping?.().catch(() => {}) },
      ...(excused != null ? { excused } : {}),
      dead: (silentMs) => {
        this.onDeadPath(conn, path, 'silent', silentMs)
        conn.abort(new Error(`${path}: the peer stopped answering (silent for ${Math.round(silentMs)} ms)`))
      }
    })
  }
}
