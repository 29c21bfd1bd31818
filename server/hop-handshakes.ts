// Bounds circuit relay HOP streams that are still in their handshake. circuitRelayServer takes
// up to maxInboundHopStreams per connection (yamux allows 1,000 streams) and keeps each one
// until its hop timeout: 1,000 idle hop streams on one connection cost the relay ~43 MiB, so a
// dozen connections from one address passed the chart's 512Mi limit, and reopening them as they
// timed out kept it there.
// Only handshakes are counted: a circuit keeps its HOP stream for its life, and how many circuits
// an agent runs through its relay grows with the mesh (one per peer it reaches relay-tcp), while a
// handshake lasts one read and a STOP round trip to the destination. A RESERVE or a refused
// CONNECT ends with the handshake; a granted CONNECT becomes a circuit, which needs a reserved
// destination and is bounded by the reservation's duration/data limits (relay-host.ts).
import type { Connection, Stream } from '@libp2p/interface'
import type { Refuse } from './limits.ts'

/**
 * Concurrent HOP handshakes on one connection. An agent opens one HOP stream per circuit it
 * dials through the relay (plus its reservation's); 64 at once is far beyond what its dialer
 * starts together, and 64 idle streams cost the relay ~3 MiB.
 */
export const MAX_HOP_HANDSHAKES_PER_CONNECTION = 64
/** Concurrent HOP handshakes relay-wide: ~43 MiB at most if all are idle. */
export const MAX_HOP_HANDSHAKES = 1024
/**
 * circuitRelayServer's hopTimeout (its default 30 s): reading the request, then the STOP round
 * trip to the destination. An honest handshake takes a few round trips; an idle one is a cost.
 */
export const HOP_HANDSHAKE_TIMEOUT_MS = 10_000

export interface HopHandshakeLimits { perConnection: number, total: number }

export interface HopHandshakeGate {
  /** a release function for an admitted handshake (idempotent), or undefined when refused (counted) */
  enter: (connectionId: string, detail?: Record<string, unknown>) => (() => void) | undefined
  /** handshakes in progress */
  readonly inProgress: number
  /** connections with a handshake in progress */
  readonly connections: number
}

export function hopHandshakeGate (limits: HopHandshakeLimits, refuse: Refuse): HopHandshakeGate {
  const perConnection = new Map<string, number>()
  let total = 0
  return {
    enter (connectionId, detail = {}) {
      const n = perConnection.get(connectionId) ?? 0
      if (n >= limits.perConnection) {
        refuse('circuit-hop-handshakes-per-connection', { ...detail, handshakes: n })
        return undefined
      }
      if (total >= limits.total) {
        refuse('circuit-hop-handshakes-total', { ...detail, handshakes: total })
        return undefined
      }
      perConnection.set(connectionId, n + 1)
      total++
      let released = false
      return () => {
        if (released) return
        released = true
        total--
        const left = (perConnection.get(connectionId) ?? 1) - 1
        if (left <= 0) perConnection.delete(connectionId)
        else perConnection.set(connectionId, left)
      }
    },
    get inProgress () { return total },
    get connections () { return perConnection.size }
  }
}

type HopHandler = (stream: Stream, connection: Connection) => Promise<void>
interface RegistrarLike {
  getHandler: (protocol: string) => { handler: HopHandler, options: Record<string, unknown> }
  handle: (protocol: string, handler: HopHandler, options: Record<string, unknown>) => Promise<void>
}

export const HOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/hop'

/**
 * Puts the gate in front of the started relay's HOP handler (registered again, same options): a
 * stream over the limits is reset before the library reads it; an admitted one counts until the
 * library's handler returns (reservation answered, CONNECT refused or joined as a circuit).
 */
export async function limitHopHandshakes (registrar: RegistrarLike, gate: HopHandshakeGate): Promise<void> {
  const { handler, options } = registrar.getHandler(HOP_PROTOCOL)
  const gated: HopHandler = async (stream, connection) => {
    const release = gate.enter(connection.id, { remote: connection.remoteAddr?.toString() })
    if (release == null) { stream.abort(new Error('too many circuit relay HOP handshakes')); return }
    try {
      await handler(stream, connection)
    } finally {
      release()
    }
  }
  await registrar.handle(HOP_PROTOCOL, gated, { ...options, force: true })
}
