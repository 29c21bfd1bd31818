// Prometheus metrics shared by the server and the agent. Each process owns one Registry so
// tests can start several components in one process without name clashes.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export class Metrics {
  readonly registry = new Registry()

  /** Datagrams on the UDP socket that failed to decode or authenticate. */
  readonly droppedDatagrams = new Counter({
    name: 'edgemesh_dropped_datagrams_total',
    help: 'Malformed, unauthenticated or unexpected control datagrams dropped',
    labelNames: ['reason'] as const,
    registers: [this.registry]
  })

  /** Tunnel connections that were refused or broken by a misbehaving peer. */
  readonly rejectedConnections = new Counter({
    name: 'edgemesh_rejected_connections_total',
    help: 'Peer connections refused (unknown peer, wrong PSK, bad handshake, bad frames)',
    labelNames: ['reason'] as const,
    registers: [this.registry]
  })

  readonly punches = new Counter({
    name: 'edgemesh_punch_attempts_total',
    help: 'UDP hole punching attempts by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry]
  })

  readonly punchMs = new Histogram({
    name: 'edgemesh_punch_duration_ms',
    help: 'Time from punch start to an open direct path',
    buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500],
    registers: [this.registry]
  })

  readonly peerConnections = new Gauge({
    name: 'edgemesh_peer_connections',
    help: 'Open tunnel connections by path',
    labelNames: ['path'] as const,
    registers: [this.registry]
  })

  /** UDX tunnel paths closed because the peer stopped answering (agent/tunnel/liveness.ts) or never answered a handshake. */
  readonly deadPaths = new Counter({
    name: 'edgemesh_tunnel_dead_paths_total',
    help: 'UDX tunnel connections closed because the peer stopped answering (reason="silent") or never answered the handshake (reason="no-answer")',
    labelNames: ['path', 'reason'] as const,
    registers: [this.registry]
  })

  readonly registeredAgents = new Gauge({
    name: 'edgemesh_registered_agents',
    help: 'Agents currently registered with this relay over UDP',
    registers: [this.registry]
  })

  readonly relayedSessions = new Gauge({
    name: 'edgemesh_blind_relay_sessions',
    help: 'Blind UDP relay sessions currently forwarding',
    registers: [this.registry]
  })

  /** What the relay refused a requester (server/limits.ts, config `limits`), by reason. */
  readonly relayRefusals = new Counter({
    name: 'edgemesh_relay_refusals_total',
    help: 'Relay requests refused: a limit reached (registrations per IP or total, connect rate, blind relay pairs, circuit reservations, circuit HOP handshakes) or not a member (connect before registering, circuit handshake without the PSK)',
    labelNames: ['reason'] as const,
    registers: [this.registry]
  })

  readonly controlMessages = new Counter({
    name: 'edgemesh_control_messages_total',
    help: 'Rendezvous control messages handled, by type',
    labelNames: ['type'] as const,
    registers: [this.registry]
  })

  readonly catalogLists = new Counter({
    name: 'edgemesh_catalog_lists_total',
    help: 'Full LISTs by the catalog per resource and why (initial, expired = 410 Gone, error)',
    labelNames: ['resource', 'reason'] as const,
    registers: [this.registry]
  })

  readonly catalogWatchEvents = new Counter({
    name: 'edgemesh_catalog_watch_events_total',
    help: 'Watch events received by the catalog per resource and type',
    labelNames: ['resource', 'type'] as const,
    registers: [this.registry]
  })

  /** bytes of watch response bodies (events and bookmarks), what a watch costs on the wire */
  readonly catalogWatchBytes = new Counter({
    name: 'edgemesh_catalog_watch_bytes_total',
    help: 'Bytes read from the catalog\'s watch response bodies per resource',
    labelNames: ['resource'] as const,
    registers: [this.registry]
  })

  /** the mesh's own writes (and the reads that go with them) of this node's peer record */
  readonly peerRecordWrites = new Counter({
    name: 'edgemesh_peer_record_writes_total',
    help: 'Requests the peer-record publisher made to the apiserver, by verb (POST, PUT, GET)',
    labelNames: ['verb'] as const,
    registers: [this.registry]
  })

  readonly catalogErrors = new Counter({
    name: 'edgemesh_catalog_errors_total',
    help: 'Catalog list/watch failures (each is retried with backoff) and skipped objects',
    labelNames: ['resource', 'reason'] as const,
    registers: [this.registry]
  })

  readonly catalogObjects = new Gauge({
    name: 'edgemesh_catalog_objects',
    help: 'Objects in the published catalog snapshot',
    labelNames: ['kind'] as const,
    registers: [this.registry]
  })

  readonly catalogFromDisk = new Gauge({
    name: 'edgemesh_catalog_serving_from_disk',
    help: '1 while the catalog serves the disk snapshot because the API is unreachable',
    registers: [this.registry]
  })

  /** Requests the health/metrics/control HTTP listeners refused (shared/http.ts). */
  readonly httpRejected = new Counter({
    name: 'edgemesh_http_rejected_requests_total',
    help: 'HTTP requests refused or failed: malformed, headers too large, too slow, unknown path or method, bad parameter, route error, connection limit',
    labelNames: ['reason'] as const,
    registers: [this.registry]
  })

  constructor (opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry })
  }
}
