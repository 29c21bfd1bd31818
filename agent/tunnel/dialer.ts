// How a connection to a peer is made. A dial asks a relay for an introduction and races,
// in parallel: the blind UDP relay leg, the punched leg, and direct TCP to candidates on our
// LAN (or public ones). The first connection wins so a failed punch never delays the first
// byte; the others keep going and become additional, possibly better, paths. Sites with UDP
// blocked (or no answering relay) are reached through libp2p circuit relay v2 over TCP. Which
// private TCP candidates get a SYN at all is candidates.ts's call.
import { setTimeout as sleep } from 'node:timers/promises'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Connection, PeerId } from '@libp2p/interface'
import type { AgentConfig, RelayRef } from '../../shared/config.ts'
import type { Logger } from '../../shared/logging.ts'
import type { Metrics } from '../../shared/metrics.ts'
import { localIPv4 } from '../../shared/net.ts'
import { endpointKey } from '../../shared/wire/addr.ts'
import type { PeerInfoMessage } from '../../shared/wire/rendezvous.ts'
import { isDialableTcpCandidate, isSameSite, tcpHostOf } from './candidates.ts'
import type { AgentNode } from './node.ts'
import { isDirect, type PathKind } from './paths.ts'
import type { PunchRegistry } from './punch.ts'
import type { RendezvousClient } from './rendezvous-client.ts'
import { dialWithAttempts } from './dial-attempts.ts'

/**
 * A dial that found the peer absent right now: no relay holds a circuit reservation for it (its
 * agent is not connected to the relay: restarting, or gone). Worth asking again shortly.
 */
export class PeerAbsentError extends Error {
  constructor (message: string) { super(message); this.name = 'PeerAbsentError' }
}

export interface DialTarget { nodeName: string, peerId: PeerId, addresses: string[], advertised: string[] }

/**
 * Which relays to reach a peer through (relay-set.ts): the peer's home relay first. Each
 * introducer resolves to a client registered at that relay (ours, or a visitor registration),
 * or undefined when that relay cannot introduce us (lost, or UDP blocked here).
 */
export interface RelayRoute {
  introducers: Array<{ relay: RelayRef, client: () => Promise<RendezvousClient | undefined> }>
  /** relays for a circuit (relay-tcp) dial, in order */
  circuits: RelayRef[]
}

export interface DialerOptions {
  node: AgentNode
  punches: PunchRegistry
  config: AgentConfig
  metrics: Metrics
  log: Logger
  /** records the path of a connection this dialer made */
  adopt: (conn: Connection, path: PathKind) => void
  pathOf: (conn: Connection) => PathKind | undefined
}

export interface Legs {
  /** every leg started for one introduction */
  all: Array<Promise<Connection>>
  /** the punched and direct TCP legs */
  direct: Array<Promise<Connection>>
  /** true once the punch found an open path (its connection is then moments away) */
  holeOpen: () => boolean
}

/** How long a circuit dial keeps asking while the target has no reservation (it re-reserves every second). */
const NO_RESERVATION_RETRY_MS = 3_000
const NO_RESERVATION_RETRY_INTERVAL_MS = 250

export class Dialer {
  private readonly opts: DialerOptions

  constructor (opts: DialerOptions) { this.opts = opts }

  /**
   * Dials until connected (dial-attempts.ts): fresh attempts beside one that hangs, another
   * shortly after one that found the peer absent; `route()` (the relays to go through, as known
   * now) is asked for each attempt. Ends with the first connection, a refusal, or `signal`.
   */
  async dialUntilConnected (target: DialTarget, route: () => RelayRoute, signal: AbortSignal): Promise<Connection> {
    return await dialWithAttempts(async (s, n) => {
      if (n > 1) this.opts.log.debug({ peer: target.nodeName, attempt: n }, 'dial: another attempt')
      return await this.dial(target, route(), s)
    }, { signal, retryable: (err) => err instanceof PeerAbsentError })
  }

  /**
   * Dials a peer over every path at once; resolves with the first connection. `addresses` (the
   * operator's) are always dialled; `advertised` (the peer's own) only where they are on our
   * LAN: whether the peer shares our public IP is not known before the relay's introduction.
   * One attempt: throws PeerAbsentError when no relay holds a reservation for the peer.
   */
  async dial (target: DialTarget, route: RelayRoute, signal: AbortSignal): Promise<Connection> {
    const attempts: Array<Promise<Connection>> = []
    const ctx = { local: localIPv4(), sameSite: false }
    const advertised = target.advertised.filter((a) => { const host = tcpHostOf(a); return host != null && isDialableTcpCandidate(host, ctx) })
    for (const a of new Set([...target.addresses, ...advertised])) attempts.push(this.dialTcp(multiaddr(a), target.peerId, signal))
    attempts.push(this.rendezvousDial(route, target.peerId, signal))
    try {
      return await Promise.any(attempts)
    } catch (err: any) {
      const reasons = err instanceof AggregateError ? err.errors.map((e: any) => e?.message ?? String(e)).join('; ') : String(err?.message ?? err)
      const message = `cannot reach ${target.nodeName}: ${reasons}`
      throw /NO_RESERVATION/.test(reasons) && !signal.aborted ? new PeerAbsentError(message) : new Error(message)
    }
  }

  private async rendezvousDial (route: RelayRoute, peerId: PeerId, signal: AbortSignal): Promise<Connection> {
    const want = peerId.toMultihash().bytes
    let info: PeerInfoMessage | undefined
    let client: RendezvousClient | undefined
    // the peer's home relay first (then the rest of its ranking): the first that answers introduces us
    for (const intro of route.introducers) {
      const c = await intro.client()
      if (signal.aborted) break
      if (c == null) continue // lost, or no registration of ours can be accepted there
      try {
        info = await c.connect(want, true, 1_500, signal)
        client = c
        break
      } catch {
        // silent relay, or the peer is not registered over UDP there (UDP blocked at its
        // site, or homed elsewhere: answered at once): try the next relay, then TCP circuits
      }
    }
    if (info == null || client == null) return await this.circuitDial(route.circuits, peerId, signal)
    if (info.peer.byteLength !== want.byteLength || !info.peer.every((b, i) => b === want[i])) throw new Error('relay introduced the wrong peer')
    const legs = this.startLegs(client, info, peerId, signal)
    let first: Connection
    try {
      first = await Promise.any(legs.all)
    } catch {
      // no UDP leg worked (for example both sides symmetric and no relay leg): TCP circuit
      return await this.circuitDial(route.circuits, peerId, signal)
    }
    // The relay usually wins by a hair even when the punch worked (both run a handshake).
    // If the hole is already open, the direct connection is moments away: take it instead,
    // since a stream stays on the connection it was opened on. A failed punch never gets here.
    if (!isDirect(this.opts.pathOf(first) ?? 'relay-tcp') && legs.holeOpen()) {
      try {
        return await Promise.race([Promise.any(legs.direct), rejectAfter(1_000)])
      } catch {}
    }
    return first
  }

  /**
   * Starts the relay, punch and TCP legs for one introduction (both roles). Once the punch
   * finds an open path, the relay leg's handshake is abandoned: both handshakes compete for
   * the same CPU, and the direct one is the connection worth having.
   */
  startLegs (client: RendezvousClient, info: PeerInfoMessage, peerId: PeerId, signal: AbortSignal): Legs {
    const { node } = this.opts
    const direct: Array<Promise<Connection>> = []
    const all: Array<Promise<Connection>> = []
    const relayAbort = new AbortController()
    if (info.relayLocalId !== 0) {
      all.push(node.services.dgram.dial({
        remotePeer: peerId, remote: client.endpoint, localId: info.relayLocalId, remoteId: info.relayRemoteId,
        initiator: info.initiator, path: 'relay-udp', signal: AbortSignal.any([signal, relayAbort.signal]),
        // the relay silent too: its restart (boot id) or loss (missed keepalives) closes the path, naming the relay
        silenceExcused: (silentMs) => !client.answeredWithin(silentMs)
      }))
    }
    let holeOpen = false
    direct.push(this.punchLeg(info, peerId, signal, () => {
      holeOpen = true
      relayAbort.abort(new Error('direct path found'))
    }))
    if (info.initiator) {
      const ctx = { local: localIPv4(), sameSite: isSameSite(info.candidates, client.observed) }
      for (const c of info.candidates) {
        if (c.proto === 'tcp' && isDialableTcpCandidate(c.host, ctx)) {
          direct.push(this.dialTcp(multiaddr(`/ip4/${c.host}/tcp/${c.port}/p2p/${peerId.toString()}`), peerId, signal))
        }
      }
    }
    all.push(...direct)
    for (const leg of all) leg.catch(() => {}) // losers are fine
    return { all, direct, holeOpen: () => holeOpen }
  }

  private async punchLeg (info: PeerInfoMessage, peerId: PeerId, signal: AbortSignal, onHoleOpen: () => void): Promise<Connection> {
    const { metrics, config, punches, node, log } = this.opts
    const udp = info.candidates.filter((c) => c.proto === 'udp')
    const r = await punches.punch(info.session, udp, { timeoutMs: config.tunnel.punchTimeoutMs, signal })
    if (r == null) {
      metrics.punches.inc({ outcome: 'failed' })
      throw new Error('hole punching failed (symmetric NAT or UDP filtered)')
    }
    onHoleOpen()
    metrics.punches.inc({ outcome: 'ok' })
    metrics.punchMs.observe(r.ms)
    log.debug({ peer: peerId.toString(), remote: endpointKey(r.remote), ms: +r.ms.toFixed(1) }, 'hole punched')
    return await node.services.dgram.dial({
      remotePeer: peerId, remote: r.remote, localId: info.directLocalId, remoteId: info.directRemoteId,
      initiator: info.initiator, path: 'direct-udp', signal
    })
  }

  /** direct-tcp to an explicit address; a fresh connection even if others exist. */
  async dialTcp (ma: Multiaddr, peerId: PeerId, signal: AbortSignal): Promise<Connection> {
    const conn = await this.opts.node.dial(ma, { force: true, signal: AbortSignal.any([signal, AbortSignal.timeout(5_000)]) })
    if (!conn.remotePeer.equals(peerId)) { await conn.close(); throw new Error('wrong peer at direct address') }
    this.opts.adopt(conn, 'direct-tcp')
    return conn
  }

  /**
   * relay-tcp: libp2p circuit relay v2 through each relay in turn (the peer's home relay
   * first: that is where it holds its reservation). A relay that answers
   * NO_RESERVATION is asked again for a few seconds: right after a relay restarts, the target
   * re-reserves within about a second, while the dial's other legs (TCP to private addresses
   * of another site) may hang to their own timeout and would hold the dial's failure anyway.
   */
  async circuitDial (relays: RelayRef[], peerId: PeerId, signal: AbortSignal): Promise<Connection> {
    const started = performance.now()
    for (;;) {
      const errors: string[] = []
      let noReservation = false
      for (const relay of relays) {
        try {
          const conn = await this.opts.node.dial(circuitAddr(relay, peerId), { force: true, signal: AbortSignal.any([signal, AbortSignal.timeout(5_000)]) })
          this.opts.adopt(conn, 'relay-tcp')
          return conn
        } catch (err: any) {
          errors.push(`${relay.host}: ${err.message}`)
          if (/NO_RESERVATION/.test(err.message)) noReservation = true
        }
      }
      if (!noReservation || signal.aborted || performance.now() - started > NO_RESERVATION_RETRY_MS) {
        throw new Error(`relay-tcp failed (${errors.join('; ')})`)
      }
      await sleep(NO_RESERVATION_RETRY_INTERVAL_MS, undefined, { signal }).catch(() => {})
    }
  }
}

export function circuitAddr (relay: RelayRef, target: PeerId): Multiaddr {
  return multiaddr(`/ip4/${relay.host}/tcp/${relay.tcpPort}/p2p/${relay.peerId}/p2p-circuit/p2p/${target.toString()}`)
}

export async function rejectAfter (ms: number): Promise<never> {
  return await new Promise((_resolve, reject) => { setTimeout(() => { reject(new Error('timeout')) }, ms) })
}
