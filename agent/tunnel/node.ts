// The agent's libp2p node: TCP (direct LAN/public paths), circuit relay v2 client (relay-tcp),
// noise + yamux, optional PSK (pnet), and the dgram transport service for UDX paths.
// Handshake failures and refused peers are logged here in one clear line each, because
// libp2p itself only reports them on its debug channel.
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { meshYamux } from '../../shared/yamux.ts'
import { noiseCrypto } from '../../shared/noise-crypto.ts'
import { identify } from '@libp2p/identify'
import { preSharedKey } from '@libp2p/pnet'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import type { MultiaddrConnection, PeerId, PrivateKey } from '@libp2p/interface'
import type { Logger } from '../../shared/logging.ts'
import type { Metrics } from '../../shared/metrics.ts'
import { DgramTransport, type DgramTransportComponents } from './dgram-transport.ts'
import { skipRepeatedProtocolMerges } from './peer-store-merges.ts'

export interface AgentNodeOptions {
  privateKey: PrivateKey
  listenHost: string
  tcpPort: number
  psk?: Uint8Array
  /** peer ids allowed to connect (mesh peers and relays); everything else is refused */
  isAllowedPeer: (peerId: PeerId) => boolean
  log: Logger
  metrics: Metrics
}

export type AgentNode = Libp2p<{ dgram: DgramTransport, identify: unknown }>

function describe (conn: { remoteAddr?: { toString: () => string } }): string {
  return conn.remoteAddr?.toString() ?? 'unknown address'
}

/**
 * Logs and counts every connection that fails its upgrade (garbage before multistream-select,
 * wrong PSK, failed noise handshake). libp2p reports these only on its debug channel; peers
 * refused by the gater are logged by the gater itself.
 */
function reportUpgradeFailures (node: Libp2p, opts: AgentNodeOptions): void {
  const upgrader = (node as any).components.upgrader
  const hasPsk = opts.psk != null
  const report = (err: any, maConn: unknown, direction: string, signal: AbortSignal | undefined): void => {
    // an upgrade we abandoned ourselves (the dialer drops the relay leg once a hole opens) is no refusal
    if (signal?.aborted === true) return
    const name = String(err?.name ?? '')
    // StreamResetError / StreamStateError: the dialer closed the transport mid-handshake (another
    // of its attempts connected first), which is no refusal
    if (name === 'ConnectionInterceptedError' || name === 'AbortError' || name === 'TimeoutError' || name === 'ConnectionDeniedError' ||
        name === 'StreamResetError' || name === 'StreamStateError' || /stream has been reset|stream that is clos/.test(String(err?.message))) return
    if (direction === 'outbound' && name !== 'EncryptionFailedError') return
    const reason = hasPsk ? 'handshake failed (wrong pre-shared key, or not an edgemesh peer)' : 'handshake failed (not an edgemesh peer, or garbage on the wire)'
    opts.metrics.rejectedConnections.inc({ reason: 'handshake' })
    opts.log.warn({ remote: describe(maConn as any), direction, err: err?.message, errName: name }, `refused connection: ${reason}`)
  }
  const inbound = upgrader.upgradeInbound.bind(upgrader)
  const outbound = upgrader.upgradeOutbound.bind(upgrader)
  upgrader.upgradeInbound = async (maConn: unknown, o: unknown) => {
    try { return await inbound(maConn, o) } catch (err) { report(err, maConn, 'inbound', (o as { signal?: AbortSignal } | undefined)?.signal); throw err }
  }
  upgrader.upgradeOutbound = async (maConn: unknown, o: any) => {
    try { return await outbound(maConn, o) } catch (err) { report(err, maConn, o?.initiator === false ? 'inbound' : 'outbound', o?.signal); throw err }
  }
}

export async function createAgentNode (opts: AgentNodeOptions): Promise<AgentNode> {
  const refuse = (peerId: PeerId, maConn: MultiaddrConnection): boolean => {
    if (opts.isAllowedPeer(peerId)) return false
    opts.metrics.rejectedConnections.inc({ reason: 'unknown-peer' })
    opts.log.warn({ peer: peerId.toString(), remote: describe(maConn) }, 'refused connection from unknown peer (not in the peer directory)')
    return true
  }
  const node = await createLibp2p({
    privateKey: opts.privateKey,
    addresses: { listen: [`/ip4/${opts.listenHost}/tcp/${opts.tcpPort}`] },
    transports: [tcp(), circuitRelayTransport({ reservationCompletionTimeout: 3_000 })],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [meshYamux()], // window <= read buffer: see shared/yamux.ts
    ...(opts.psk != null ? { connectionProtector: preSharedKey({ psk: opts.psk }) } : {}),
    connectionGater: {
      // agents dial LAN and documentation-range addresses on purpose
      denyDialMultiaddr: () => false,
      denyInboundEncryptedConnection: refuse,
      denyOutboundEncryptedConnection: refuse
    },
    connectionManager: { maxConnections: 4096, inboundUpgradeTimeout: 10_000, inboundConnectionThreshold: 100 },
    // our keepalives (UDX) and ping protocol watch liveness; libp2p's monitor would add traffic
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      dgram: (components: DgramTransportComponents) => new DgramTransport(components)
    }
  })
  reportUpgradeFailures(node, opts)
  // libp2p re-merges a stream's protocol into the peer's record on every stream, before an
  // inbound handler runs: once per peer and protocol is enough for ours
  const forget = skipRepeatedProtocolMerges(node.peerStore, node.peerId, (p) => p.startsWith('/edgemesh/'))
  node.addEventListener('peer:disconnect', (evt) => { forget(evt.detail) })
  return node as unknown as AgentNode
}
