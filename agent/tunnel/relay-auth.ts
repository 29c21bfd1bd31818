// Decides whether a message that claims to come from a relay really does, before the
// rendezvous client acts on it. Anyone who can spoof the relay's UDP source address could
// otherwise fake a `registered` with a new boot id (every relayed session through that relay
// is dropped) or introductions and errors. Each relay message carries a signature by the
// relay's key (its peer id is in our config) over the message and our own peer id, and echoes
// the timestamp of our latest register it accepted; our own clock, so no clock sync is needed.
//   registered:    signed, echo is one of our register timestamps of the last window, and for a
//                  register sent no earlier than the one whose answer we accepted last (by our
//                  own send order, not by timestamp value: an old answer carrying an old boot id
//                  cannot be replayed after the relay restarted; a merely reordered one is
//                  dropped quietly)
//   answers:       signed, and the random request id we are waiting on (plus the echo window)
//   introductions: signed, echo within the window
//   register-refused: signed, echo one of our recent register timestamps
// Pure: no sockets, clocks injected.
import { randomInt } from 'node:crypto'
import { ConnectErrorCode, MAX_TIMESTAMP_MS, relaySignedBytes, type RelayMessage } from '../../shared/wire/rendezvous.ts'

/** How long a register timestamp of ours stays acceptable as an echo (> 2 keepalives at the 25 s maximum). */
export const ECHO_WINDOW_MS = 60_000
/** Remembered register timestamps at most (a 200 ms keepalive sends 300 a minute). */
const MAX_REMEMBERED = 1_024
/**
 * Register timestamps fall in one residue class modulo STAMP_CLASSES, and every backward step of
 * the wall clock moves to the next class. Following the clock down would otherwise send the very
 * timestamps we sent before the step, and a captured answer to one of those (an old boot id)
 * would echo a register we just sent. A random class at start does the same, mostly, across
 * restarts. Costs at most 15 ms of accuracy (the relay allows 10 minutes).
 */
export const STAMP_CLASSES = 16
/** A wall clock this far behind our last timestamp has stepped back; less is jitter (we keep increasing). */
export const CLOCK_STEP_MS = 1_000

export type RelayVerdict =
  | { verdict: 'ok' }
  /** an answer to a request we are no longer waiting on (a late duplicate): drop quietly */
  | { verdict: 'unexpected' }
  /** a `registered` for an earlier register than one whose answer we accepted (reordered, or replayed): drop quietly */
  | { verdict: 'reordered' }
  | { verdict: 'forged', reason: string }

export interface RelayAuthOptions {
  /** checks a signature with the relay's public key */
  verify: (data: Uint8Array, signature: Uint8Array) => boolean
  /** our peer id bytes, which the relay signs with every message to us */
  self: Uint8Array
  windowMs?: number
  /** monotonic clock, ms */
  now?: () => number
  /** wall clock, ms (register timestamps) */
  wallClock?: () => number
  /** the first residue class of our timestamps (default random) */
  stampClass?: number
}

export class RelayAuth {
  private readonly opts: RelayAuthOptions
  private readonly windowMs: number
  private readonly now: () => number
  private readonly wallClock: () => number
  /** our register timestamps -> when we sent them (monotonic); in send order */
  private readonly sent = new Map<number, number>()
  private lastTimestamp = 0
  private stampClass: number
  /** when we sent the register whose `registered` we accepted last (monotonic) */
  private newestAcceptedSentAt = -Infinity

  constructor (opts: RelayAuthOptions) {
    this.opts = opts
    this.windowMs = opts.windowMs ?? ECHO_WINDOW_MS
    this.now = opts.now ?? (() => performance.now())
    this.wallClock = opts.wallClock ?? Date.now
    this.stampClass = (opts.stampClass ?? randomInt(STAMP_CLASSES)) % STAMP_CLASSES
  }

  /**
   * The timestamp for the next register, remembered as a valid echo. It follows the wall clock
   * (the relay refuses registers more than 10 minutes off its own), down too when the clock
   * steps back, then in a new residue class (STAMP_CLASSES); otherwise strictly increasing.
   */
  nextRegisterTimestamp (): number {
    const wall = Math.min(MAX_TIMESTAMP_MS - STAMP_CLASSES, Math.max(0, Math.floor(this.wallClock())))
    const steppedBack = wall < this.lastTimestamp - CLOCK_STEP_MS
    if (steppedBack) this.stampClass = (this.stampClass + 1) % STAMP_CLASSES
    let ts = wall + (((this.stampClass - wall) % STAMP_CLASSES) + STAMP_CLASSES) % STAMP_CLASSES
    if (!steppedBack && ts <= this.lastTimestamp) ts = this.lastTimestamp + STAMP_CLASSES
    this.lastTimestamp = ts
    this.sent.delete(ts) // (only after STAMP_CLASSES steps back) keep the map in send order
    this.sent.set(ts, this.now())
    this.prune()
    return ts
  }

  /**
   * Checks one decoded relay message (`signed`: the bytes its signature covers, from
   * decodeMessage). `isPending` says whether we wait on a connect with that request id. An ok
   * `registered` raises the floor for later ones.
   */
  check (m: RelayMessage, signed: Uint8Array, isPending: (requestId: number) => boolean): RelayVerdict {
    this.prune()
    // cheap checks first: a flood of forgeries must not cost a signature verification each
    switch (m.type) {
      case 'registered': {
        const sentAt = this.sent.get(m.echo)
        if (sentAt === undefined) return forged('registered echoes no recent register of ours')
        if (sentAt < this.newestAcceptedSentAt) return { verdict: 'reordered' }
        break
      }
      case 'peer-info':
        if (m.requestId !== 0 && !isPending(m.requestId)) return { verdict: 'unexpected' }
        if (!this.sent.has(m.echo)) return forged('peer-info echoes no recent register of ours')
        break
      case 'register-refused':
        if (!this.sent.has(m.echo)) return forged('register-refused echoes no recent register of ours')
        break
      case 'connect-error':
        if (!isPending(m.requestId)) return { verdict: 'unexpected' }
        // a relay that does not know us has no echo to give; only "register first" says so
        if (m.echo === 0 ? m.code !== ConnectErrorCode.notRegistered : !this.sent.has(m.echo)) return forged('connect-error echoes no recent register of ours')
        break
    }
    if (!this.opts.verify(relaySignedBytes(signed, this.opts.self), m.signature)) return forged(`${m.type} has a bad signature`)
    if (m.type === 'registered') this.newestAcceptedSentAt = this.sent.get(m.echo)!
    return { verdict: 'ok' }
  }

  private prune (): void {
    const oldest = this.now() - this.windowMs
    for (const [ts, at] of this.sent) {
      if (at >= oldest && this.sent.size <= MAX_REMEMBERED) break
      this.sent.delete(ts)
    }
  }
}

function forged (reason: string): RelayVerdict {
  return { verdict: 'forged', reason }
}
