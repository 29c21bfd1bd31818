// One agent's conversation with one relay over the shared UDP socket: signed registration
// (which doubles as the keepalive that holds the NAT mapping open), restart detection via the
// relay's boot id, and connect requests that return the peer's candidates and stream ids.
// Nothing the relay says is acted on before relay-auth.ts has checked it came from the relay.
import { EventEmitter } from 'node:events'
import { randomInt } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from '../../shared/logging.ts'
import type { RelayRef } from '../../shared/config.ts'
import type { UdxSocket } from '../../shared/udx.ts'
import type { Endpoint } from '../../shared/wire/addr.ts'
import { pskMac } from '../../shared/wire/auth.ts'
import { LogThrottle } from '../../shared/log-throttle.ts'
import {
  COOKIE_BYTES, MAX_KEEPALIVE_MS, MIN_KEEPALIVE_MS, RegisterRefusal, VERSION, encodeMessage, encodeRegister, encodeRegisterBody,
  type Candidate, type ConnectErrorMessage, type PeerInfoMessage, type RelayMessage
} from '../../shared/wire/rendezvous.ts'
import { RelayAuth } from './relay-auth.ts'

/** Missed keepalive answers before the relay counts as unreachable. */
const MISSES_BEFORE_DOWN = 3
/** After the first, forged relay messages are logged at most this often (they are counted always). */
const FORGERY_LOG_INTERVAL_MS = 10 * 60_000
/** Each register interval is its nominal length +- this fraction, uniformly (mean: the nominal length). */
export const KEEPALIVE_JITTER = 0.15

/**
 * One register interval: `nominalMs` +- KEEPALIVE_JITTER. Agents that start together (a site
 * powering up, all of them back after a relay restart) would otherwise register in lock-step,
 * every keepalive a burst of the whole fleet at the relay; drawn afresh per interval, their
 * phases spread out within a few intervals. `random` returns [0, 1).
 */
export function jitteredInterval (nominalMs: number, random: () => number = Math.random): number {
  return Math.round(nominalMs * (1 + KEEPALIVE_JITTER * (2 * random() - 1)))
}

export class ConnectRefusedError extends Error {
  readonly code: number
  constructor (m: ConnectErrorMessage) {
    super(`relay refused connect: ${m.reason}`)
    this.name = 'ConnectRefusedError'
    this.code = m.code
  }
}

export interface RendezvousClientEvents {
  /** a peer asked this relay to connect to us */
  incoming: [PeerInfoMessage]
  /** registration state changed: up (answers arrive) or down */
  state: [boolean]
  /** the relay process restarted: every relay session through it is gone */
  restarted: []
}

export interface RendezvousClientOptions {
  relay: RelayRef
  /** the relay's UDP endpoint (the configured host must be an IP address) */
  endpoint: Endpoint
  socket: UdxSocket
  privateKey: PrivateKey
  peerIdBytes: Uint8Array
  nodeName: string
  candidates: () => Candidate[]
  psk?: Uint8Array
  keepaliveMs: number
  /** checks a signature with the relay's public key (from relay.peerId) */
  verifyRelay: (data: Uint8Array, signature: Uint8Array) => boolean
  log: Logger
  /** [0, 1) for the keepalive jitter (tests); Math.random by default */
  random?: () => number
}

/** What became of a datagram from the relay's address. */
export type RelayMessageOutcome = 'handled' | 'unexpected' | 'reordered' | 'forged'

export class RendezvousClient extends EventEmitter<RendezvousClientEvents> {
  readonly endpoint: Endpoint
  readonly relay: RelayRef
  /** our public address as this relay sees it */
  observed: Endpoint | null = null
  bootId: number | null = null
  up = false
  lastRttMs: number | null = null
  /** when the relay last accepted our registration (monotonic ms) */
  private lastAnswerAt = -Infinity
  private readonly opts: RendezvousClientOptions
  private keepaliveMs: number
  private timer: NodeJS.Timeout | undefined
  private misses = 0
  private lastRegisterSentAt = 0
  private readonly pending = new Map<number, { resolve: (m: PeerInfoMessage) => void, reject: (e: Error) => void }>()
  private readonly upWaiters = new Set<() => void>()
  private stopped = false
  private readonly auth: RelayAuth
  /** the cookie of our registration (from the latest accepted `registered`): every connect carries it */
  private cookie: Uint8Array = new Uint8Array(COOKIE_BYTES)
  private readonly logThrottle = new LogThrottle(FORGERY_LOG_INTERVAL_MS, 8)
  private forgeriesSinceLog = 0

  constructor (opts: RendezvousClientOptions) {
    super()
    this.opts = opts
    this.relay = opts.relay
    this.endpoint = opts.endpoint
    this.keepaliveMs = opts.keepaliveMs
    this.auth = new RelayAuth({ verify: opts.verifyRelay, self: opts.peerIdBytes })
  }

  start (): void {
    void this.register()
    this.schedule()
  }

  private schedule (): void {
    clearTimeout(this.timer)
    if (this.stopped) return
    // register quickly while down so a restarted relay is found again within about a second;
    // jittered either way (see jitteredInterval)
    const delay = jitteredInterval(this.up ? this.keepaliveMs : Math.min(1_000, this.keepaliveMs), this.opts.random)
    this.timer = setTimeout(() => {
      if (this.lastRegisterSentAt > 0 && ++this.misses >= MISSES_BEFORE_DOWN && this.up) this.setUp(false)
      void this.register()
      this.schedule()
    }, delay)
    this.timer.unref()
  }

  private async register (): Promise<void> {
    const { privateKey, peerIdBytes, nodeName, psk } = this.opts
    let body: Uint8Array
    try {
      body = encodeRegisterBody({ timestampMs: this.auth.nextRegisterTimestamp(), peerId: peerIdBytes, nodeName, candidates: this.opts.candidates() })
    } catch (err) {
      this.opts.log.error({ err }, 'cannot encode registration')
      return
    }
    const signature = await privateKey.sign(body)
    this.lastRegisterSentAt = performance.now()
    this.send(encodeRegister(body, signature, pskMac(psk, body)))
  }

  private send (buf: Uint8Array): void {
    if (this.stopped) return
    this.opts.socket.trySend(buf, this.endpoint.port, this.endpoint.host)
  }

  private setUp (up: boolean): void {
    if (this.up === up) return
    this.up = up
    this.opts.log.info({ relay: `${this.endpoint.host}:${this.endpoint.port}`, observed: this.observed }, up ? 'registered with relay over UDP' : 'relay not answering over UDP')
    if (up) { for (const w of this.upWaiters) w(); this.upWaiters.clear() }
    this.emit('state', up)
  }

  /** Whether the relay answered a registration of ours within the last `ms`. */
  answeredWithin (ms: number): boolean {
    return performance.now() - this.lastAnswerAt <= ms
  }

  /** Resolves once registered, or false after timeoutMs (UDP blocked or relay down). */
  async waitUp (timeoutMs: number): Promise<boolean> {
    if (this.up) return true
    return await new Promise((resolve) => {
      const w = (): void => { clearTimeout(t); resolve(true) }
      const t = setTimeout(() => { this.upWaiters.delete(w); resolve(false) }, timeoutMs)
      this.upWaiters.add(w)
    })
  }

  /**
   * A message from this relay's endpoint (decoded; `signed` as decodeMessage returned it).
   * Forgeries are logged here (rate-limited) and change nothing; the caller counts them.
   */
  onMessage (m: RelayMessage, signed: Uint8Array): RelayMessageOutcome {
    const check = this.auth.check(m, signed, (id) => this.pending.has(id))
    if (check.verdict === 'unexpected') return 'unexpected'
    if (check.verdict === 'reordered') return 'reordered'
    if (check.verdict === 'forged') { this.logForgery(check.reason); return 'forged' }
    switch (m.type) {
      case 'registered': {
        this.misses = 0
        this.lastAnswerAt = performance.now()
        this.lastRttMs = this.lastRegisterSentAt > 0 ? performance.now() - this.lastRegisterSentAt : null
        const restarted = this.bootId !== null && this.bootId !== m.bootId
        this.bootId = m.bootId
        this.observed = m.observed
        this.cookie = m.cookie
        // follow the relay's hint, but never slower than our own configured interval (the
        // decoder bounds it already; clamped again so no value can make a tight loop)
        this.keepaliveMs = Math.min(this.opts.keepaliveMs, Math.max(MIN_KEEPALIVE_MS, Math.min(MAX_KEEPALIVE_MS, m.keepaliveMs)))
        if (restarted) {
          this.opts.log.warn({ relay: `${this.endpoint.host}:${this.endpoint.port}` }, 'relay restarted: dropping sessions through it')
          this.emit('restarted')
        }
        this.setUp(true)
        return 'handled'
      }
      case 'peer-info':
        if (m.requestId === 0) { this.emit('incoming', m); return 'handled' }
        this.pending.get(m.requestId)?.resolve(m)
        return 'handled'
      case 'register-refused': {
        // said once (then every 10 minutes): otherwise the relay just looks down
        if (this.logThrottle.shouldLog('refused', performance.now())) {
          this.opts.log.warn({ relay: `${this.endpoint.host}:${this.endpoint.port}` }, m.reason === RegisterRefusal.perIp
            ? 'relay refused our registration: it has as many agents from our public IP as it allows (its limits.maxAgentsPerIp); relay-tcp may still work'
            : 'relay refused our registration: it has as many agents as it allows (its maxAgents); relay-tcp may still work')
        }
        return 'handled'
      }
      case 'connect-error': {
        const p = this.pending.get(m.requestId)
        if (p == null) return 'unexpected'
        this.pending.delete(m.requestId)
        if (m.code === 3) void this.register() // relay forgot us: re-register now
        p.reject(new ConnectRefusedError(m))
        return 'handled'
      }
    }
  }

  /** A datagram from this relay's endpoint that does not even decode (out-of-range field, garbage). */
  onUndecodable (err: Error): void {
    this.logForgery(`undecodable: ${err.message}`)
  }

  /**
   * A datagram from this relay's endpoint in another protocol version: most likely the relay
   * and this agent are different releases, not an attack. Said once (per version, then at most
   * every 10 minutes); the caller counts it.
   */
  onOtherVersion (version: number): void {
    if (!this.logThrottle.shouldLog(`version ${version}`, performance.now())) return
    this.opts.log.warn({ relay: `${this.endpoint.host}:${this.endpoint.port}`, version },
      `relay speaks rendezvous protocol v${version}, this agent v${VERSION}: upgrade both (relay-tcp keeps working meanwhile)`)
  }

  /** Logs the first forgery at once, then at most one summary per FORGERY_LOG_INTERVAL_MS. */
  private logForgery (reason: string): void {
    this.forgeriesSinceLog++
    if (!this.logThrottle.shouldLog('forged', performance.now())) return
    this.opts.log.warn({ relay: `${this.endpoint.host}:${this.endpoint.port}`, reason, count: this.forgeriesSinceLog },
      'dropped a forged message claiming to come from the relay (spoofed source address?); further ones are counted in edgemesh_dropped_datagrams_total{reason="forged-relay-message"} and logged at most every 10 minutes')
    this.forgeriesSinceLog = 0
  }

  /** Asks the relay to introduce us to `target`; retransmits until answered. */
  async connect (target: Uint8Array, wantRelay: boolean, timeoutMs: number, signal?: AbortSignal): Promise<PeerInfoMessage> {
    const requestId = randomInt(1, 0xffffffff)
    // encoded for each send: a re-registration (new cookie) while we retry must not strand the request
    const msg = (): Uint8Array => encodeMessage({ type: 'connect', requestId, target, wantRelay, requester: this.opts.peerIdBytes, cookie: this.cookie })
    return await new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearInterval(retry); clearTimeout(timeout)
        signal?.removeEventListener('abort', onAbort)
        this.pending.delete(requestId)
      }
      const onAbort = (): void => { cleanup(); reject(signal?.reason ?? new Error('aborted')) }
      this.pending.set(requestId, {
        resolve: (m) => { cleanup(); resolve(m) },
        reject: (e) => { cleanup(); reject(e) }
      })
      const retry = setInterval(() => { this.send(msg()) }, 200)
      const timeout = setTimeout(() => { cleanup(); reject(new Error(`relay ${this.endpoint.host}:${this.endpoint.port} did not answer`)) }, timeoutMs)
      signal?.addEventListener('abort', onAbort)
      this.send(msg())
    })
  }

  stop (): void {
    this.stopped = true
    clearTimeout(this.timer)
    for (const p of this.pending.values()) p.reject(new Error('stopped'))
    this.pending.clear()
  }
}
