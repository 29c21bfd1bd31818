// Blind UDP relay: two UDX streams on the relay's socket, each forwarding the other's packets
// in native code (udx-native relayTo). Payload stays noise-encrypted end to end: the relay
// never decrypts and never sees plaintext. Pairs that carry no packets for `idleMs` are freed
// (agents keep used pairs alive with UDX keepalives). Each pair is charged to the agent that
// asked for it: at most maxPairsPerAgent each, maxPairs in all.
import type { Logger } from '../shared/logging.ts'
import type { Metrics } from '../shared/metrics.ts'
import type { Udx, UdxSocket, UdxStream } from '../shared/udx.ts'
import type { Endpoint } from '../shared/wire/addr.ts'
import { KeyedCounter, createRefuse, type Refuse } from './limits.ts'

interface RelayPair { a: UdxStream, b: UdxStream, lastPackets: number, lastActive: number, owner: string }

export interface RelayLeg { endpoint: Endpoint, remoteId: number }

export class BlindRelay {
  private readonly pairs = new Set<RelayPair>()
  private readonly usedIds = new Set<number>()
  private readonly gcTimer: NodeJS.Timeout
  private readonly udx: Udx
  private readonly socket: UdxSocket
  private readonly log: Logger
  private readonly metrics: Metrics
  private readonly idleMs: number
  private readonly perAgent: KeyedCounter
  private readonly refuse: Refuse
  readonly maxPairs: number
  /** bytes forwarded by pairs already closed (open pairs are read live) */
  private closedBytes = 0

  constructor (opts: { udx: Udx, socket: UdxSocket, log: Logger, metrics: Metrics, idleMs?: number, maxPairs?: number, maxPairsPerAgent?: number }) {
    this.udx = opts.udx
    this.socket = opts.socket
    this.log = opts.log
    this.metrics = opts.metrics
    this.idleMs = opts.idleMs ?? 30_000
    this.maxPairs = opts.maxPairs ?? 20_000
    this.perAgent = new KeyedCounter(opts.maxPairsPerAgent ?? 256)
    this.refuse = createRefuse((reason) => { opts.metrics.relayRefusals.inc({ reason }) }, (d, msg) => { opts.log.warn(d, msg) })
    this.gcTimer = setInterval(() => { this.collectIdle() }, Math.min(5_000, this.idleMs / 2))
    this.gcTimer.unref()
  }

  get size (): number { return this.pairs.size }

  /** A fresh stream id not used by any relay stream on this socket (0 is never used). */
  allocateId (): number {
    for (;;) {
      const id = (Math.random() * 0xffffffff) >>> 0
      if (id !== 0 && !this.usedIds.has(id)) { this.usedIds.add(id); return id }
    }
  }

  /**
   * Starts forwarding between two legs; `aId`/`bId` are the relay-side ids from allocateId.
   * `owner` (the asking agent's peer id) is charged with the pair until it closes. False when a
   * limit refused it (counted and logged).
   */
  open (aId: number, a: RelayLeg, bId: number, b: RelayLeg, owner = ''): boolean {
    const refused = this.pairs.size >= this.maxPairs ? 'relay-pairs-total' : !this.perAgent.tryAcquire(owner) ? 'relay-pairs-per-agent' : undefined
    if (refused != null) {
      this.usedIds.delete(aId); this.usedIds.delete(bId)
      this.refuse(refused, { owner, pairs: this.pairs.size })
      return false
    }
    const sa = this.udx.createStream(aId)
    const sb = this.udx.createStream(bId)
    sa.connect(this.socket, a.remoteId, a.endpoint.port, a.endpoint.host)
    sb.connect(this.socket, b.remoteId, b.endpoint.port, b.endpoint.host)
    sa.relayTo(sb)
    sb.relayTo(sa)
    const pair: RelayPair = { a: sa, b: sb, lastPackets: 0, lastActive: Date.now(), owner }
    const drop = (): void => { this.close(pair) }
    for (const s of [sa, sb]) {
      s.on('error', drop)
      s.on('close', drop)
    }
    this.pairs.add(pair)
    this.metrics.relayedSessions.set(this.pairs.size)
    return true
  }

  private packets (p: RelayPair): number {
    // a relaying stream counts what it receives (and forwards); its transmit counters stay 0
    return (p.a as any).packetsReceived + (p.b as any).packetsReceived
  }

  private bytes (p: RelayPair): number {
    return (p.a as any).bytesReceived + (p.b as any).bytesReceived
  }

  /** Bytes forwarded since start, both directions, UDX headers included (edgemesh_blind_relay_bytes_total). */
  forwardedBytes (): number {
    let n = this.closedBytes
    for (const p of this.pairs) n += this.bytes(p)
    return n
  }

  private collectIdle (): void {
    const now = Date.now()
    for (const p of this.pairs) {
      const n = this.packets(p)
      if (n !== p.lastPackets) { p.lastPackets = n; p.lastActive = now; continue }
      if (now - p.lastActive > this.idleMs) this.close(p)
    }
  }

  private close (p: RelayPair): void {
    if (!this.pairs.has(p)) return
    this.closedBytes += this.bytes(p)
    this.pairs.delete(p)
    this.perAgent.release(p.owner)
    this.usedIds.delete(p.a.id); this.usedIds.delete(p.b.id)
    p.a.destroy(); p.b.destroy()
    this.metrics.relayedSessions.set(this.pairs.size)
    this.log.debug({ a: p.a.id, b: p.b.id }, 'blind relay pair closed')
  }

  stop (): void {
    clearInterval(this.gcTimer)
    for (const p of [...this.pairs]) this.close(p)
  }
}
