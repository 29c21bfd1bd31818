// An in-process relay libp2p host on 127.0.0.1 (no PSK, small limits) and in-process agent
// nodes, for the integration tests of server/relay-host.ts; each is stopped by the caller's
// afterEach through `stops`.
import { generateKeyPair } from '@libp2p/crypto/keys'
import { startRelayHost } from '../../server/relay-host.ts'
import { createAgentNode, type AgentNode } from '../../agent/tunnel/node.ts'
import { createLogger } from '../../shared/logging.ts'
import { Metrics } from '../../shared/metrics.ts'

export const log = createLogger({ name: 'test', level: 'silent' })

export type RelayHost = Awaited<ReturnType<typeof startRelayHost>>

export async function testRelayHost (stops: Array<() => Promise<void>>, opts: { metrics?: Metrics, maxConnectionsPerIp?: number } = {}): Promise<RelayHost> {
  const host = await startRelayHost({
    privateKey: await generateKeyPair('Ed25519'), host: '127.0.0.1', tcpPort: 0, announce: [],
    limits: { maxReservations: 100, maxReservationsPerIp: 100, reservationTtlSeconds: 3_600, circuitDurationSeconds: 0, circuitDataBytes: 0 },
    connections: { maxConnections: 100, inboundConnectionThreshold: 100, maxIncomingPendingConnections: 100, ...(opts.maxConnectionsPerIp != null ? { maxConnectionsPerIp: opts.maxConnectionsPerIp } : {}) },
    log, metrics: opts.metrics ?? new Metrics({ processMetrics: false })
  })
  stops.push(async () => { await host.stop() })
  return host
}

export async function testAgentNode (stops: Array<() => Promise<void>>): Promise<AgentNode> {
  const node = await createAgentNode({ privateKey: await generateKeyPair('Ed25519'), listenHost: '127.0.0.1', tcpPort: 0, isAllowedPeer: () => true, log, metrics: new Metrics({ processMetrics: false }) })
  stops.push(async () => { await node.stop() })
  return node
}

/** edgemesh_relay_refusals_total for one reason. */
export async function refusals (metrics: Metrics, reason: string): Promise<number> {
  const m = await metrics.relayRefusals.get()
  return m.values.find((v) => v.labels.reason === reason)?.value ?? 0
}
