// Our libp2p (TCP) connections to the relays, beside the UDP registrations of relay-set.ts:
// whether a relay answers (a dial), the circuit reservation held at the home relay only (a
// reservation left at a former home is released once no circuit runs through it), and the
// connection to a relay no longer visited.
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import type { RelayRef } from '../../shared/config.ts'
import type { Logger } from '../../shared/logging.ts'
import type { AgentNode } from './node.ts'

const CIRCUIT_PROTOCOL_PREFIX = '/libp2p/circuit/relay/'

export interface RelayLinksOptions {
  node: AgentNode
  relays: readonly RelayRef[]
  /** the home relay now (relay-set.ts) */
  home: () => RelayRef | undefined
  /** our own close of the connections to this relay follows: not a sign of its loss */
  expectClose: (relayPeerId: string) => void
  /** a reservation at the home was made (true) or failed (false): a health signal */
  onReservation: (relayPeerId: string, ok: boolean) => void
  log: Logger
  /** the tunnel's: ends probes in flight */
  signal: AbortSignal
}

export class RelayLinks {
  private readonly opts: RelayLinksOptions
  private reserving = false

  constructor (opts: RelayLinksOptions) {
    this.opts = opts
  }

  /** Whether the relay answers over TCP: an open connection, or a fresh dial that succeeds. */
  async probe (relay: RelayRef): Promise<boolean> {
    const { node, signal } = this.opts
    if (signal.aborted) return false
    if (node.getConnections(peerIdFromString(relay.peerId)).some((c) => c.status === 'open')) return true
    try {
      await node.dial(multiaddr(`/ip4/${relay.host}/tcp/${relay.tcpPort}/p2p/${relay.peerId}`), { signal: AbortSignal.any([signal, AbortSignal.timeout(2_000)]) })
      return true
    } catch {
      return false
    }
  }

  /**
   * Listens on the home relay's circuit address; re-reserves after the relay restarts. A
   * reservation left at a former home is released (its connection closed) once no circuit
   * runs through it. One reservation at a time: the circuit transport's reservation queue
   * stalled when two listens on different relays overlapped.
   */
  ensureReservation (): void {
    const { node, log } = this.opts
    const addrs = node.getMultiaddrs().map(String)
    const home = this.opts.home()
    for (const relay of this.opts.relays) {
      if (relay.peerId === home?.peerId || !addrs.some((a) => a.includes(`/p2p/${relay.peerId}/p2p-circuit`))) continue
      const conns = node.getConnections(peerIdFromString(relay.peerId))
      if (conns.length === 0 || conns.some((c) => c.streams.some((st) => st.protocol?.startsWith(CIRCUIT_PROTOCOL_PREFIX) === true))) continue
      log.info({ relay: relay.host }, 'releasing the circuit reservation at a former home relay')
      this.opts.expectClose(relay.peerId)
      for (const c of conns) c.close().catch(() => { c.abort(new Error('reservation released')) })
    }
    if (this.reserving || home == null || addrs.some((a) => a.includes(`/p2p/${home.peerId}/p2p-circuit`))) return
    this.reserving = true
    const listenAddr = multiaddr(`/ip4/${home.host}/tcp/${home.tcpPort}/p2p/${home.peerId}/p2p-circuit`)
    const tm = (node as any).components.transportManager
    // bounded (a silent relay); the timer goes with the attempt, and never holds the process open
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error('timeout')) }, 10_000); timer.unref() })
    Promise.race([tm.listen([listenAddr]), timeout])
      .then(() => { this.opts.onReservation(home.peerId, true) }, (err: any) => {
        log.debug({ relay: home.host, err: err.message }, 'circuit reservation failed; retrying')
        this.opts.onReservation(home.peerId, false)
      })
      .finally(() => { clearTimeout(timer); this.reserving = false })
  }

  /** Closes our connections to a relay we no longer visit, unless a stream (a circuit) still runs on one. */
  closeUnvisited (relay: RelayRef): void {
    const conns = this.opts.node.getConnections(peerIdFromString(relay.peerId))
    if (conns.length === 0 || conns.some((c) => c.streams.length > 0)) return
    this.opts.expectClose(relay.peerId)
    for (const c of conns) c.close().catch(() => { c.abort(new Error('relay no longer visited')) })
  }
}
