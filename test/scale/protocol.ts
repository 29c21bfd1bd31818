// Messages between the fleet (fleet.ts) and its worker processes (worker.ts).
import type { SimRelay } from './sim-agent.ts'

export interface WorkerCommon {
  kubeServer: string
  caPem: string
  namespace: string
  relays: SimRelay[]
  pskHex?: string
  keepaliveMs: number
  leaseDurationSeconds: number
  catalog: boolean
  reservation: boolean
}

export type WorkerRequest =
  | { op: 'init', common: WorkerCommon }
  | { op: 'start', agents: Array<{ nodeName: string, bindHost: string, token: string }>, concurrency: number }
  | { op: 'stats' }
  | { op: 'connect', from: string, target: string, timeoutMs: number }
  | { op: 'saturate', durationMs: number, concurrency: number, targets: string[], timeoutMs: number }
  | { op: 'takeIncoming' }
  | { op: 'stop' }

export interface WorkerStats {
  agents: number
  registered: number
  synced: number
  reserved: number
  dropped: number
  /** fewest peer records any of the worker's agents has in its catalog */
  minPeers: number
  /** sum of the agents' edgemesh_catalog_watch_events_total */
  watchEvents: number
  /** the same by resource (services, endpointSlices, nodes, peers, ...) */
  watchEventsByResource: Record<string, number>
  /** sum of edgemesh_catalog_watch_bytes_total when the agent exports it */
  watchBytesMetric: number | undefined
  /** the harness's own count of watch event bytes (JSON lines) */
  watchBytesCounted: number
  /** non-GET requests of the agents' KubeClients (peer-record writes) */
  kubeWrites: number
  /** sum of edgemesh_peer_record_writes_total when the agent exports it */
  peerRecordWrites: number | undefined
  rssBytes: number
  heapUsedBytes: number
  /** process CPU (user + system) so far */
  cpuMicros: number
  at: number
}
