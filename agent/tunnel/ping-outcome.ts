// What a tunnel ping reports: the time of every phase (getting a connection, opening the ping
// stream, the round trips, the whole), and, when it fails, the actual cause. Pure: the tunnel
// gathers the facts, these functions decide what they mean.
import type { PathKind } from './paths.ts'

/** How the ping got its connection: one already open, a dial it started, or one in progress. */
export type ConnectionOrigin = 'existing' | 'dialled' | 'joined'

export interface PingResult {
  node: string
  path: PathKind
  remote: string
  /** the smallest round trip (the figure `status` shows) */
  rttMs: number
  rttAvgMs: number
  rttMaxMs: number
  rttsMs: number[]
  /** time to get the connection (0 when one was open) */
  connectMs: number
  connection: ConnectionOrigin
  /** time to open (negotiate) the ping stream on that connection */
  streamOpenMs: number
  /** wall time of the whole ping, retry included */
  totalMs: number
  /** set when the first attempt failed and one retry on a fresh connection succeeded: why it failed */
  retriedAfter?: string
  /** how long that failed first attempt took (the phases above are the retry's) */
  failedAttemptMs?: number
}

export type PingPhase = 'connect' | 'stream' | 'echo'

/** Why our own code closed a relayed connection. */
export interface RelayDrop { relay: string, reason: 'relay-restarted' | 'relay-down' }

export interface PingFailureFacts {
  node: string
  phase: PingPhase
  error: string
  /** the error was the ping's own deadline */
  timedOut: boolean
  connection?: ConnectionOrigin
  path?: PathKind
  remote?: string
  /** the connection was still open after the failure */
  connectionOpen: boolean
  /** the tunnel closed this connection itself because its relay restarted or went down */
  droppedByUs?: RelayDrop
  /** the most recent relay restart, when one happened in the last RECENT_RESTART_MS */
  recentRelayRestart?: { relay: string, agoMs: number }
}

export type PingFailureCause = 'relay-reset' | 'relay-down' | 'refused' | 'closed' | 'unreachable' | 'timeout' | 'error'

export interface PingFailure {
  cause: PingFailureCause
  message: string
  /** worth one more attempt on a fresh connection */
  retry: boolean
}

export const RECENT_RESTART_MS = 15_000
/** probes per ping, at most (each waits for its echo) */
export const MAX_PING_COUNT = 100

const PHASE_TEXT: Record<PingPhase, string> = {
  connect: 'getting a connection',
  stream: 'opening the ping stream',
  echo: 'waiting for the echo'
}

/** Human durations: 0.91 ms, 6.2 ms, 312 ms, 3.2 s. */
export function formatDuration (ms: number): string {
  if (ms < 10) return `${ms.toFixed(2)} ms`
  if (ms < 100) return `${ms.toFixed(1)} ms`
  if (ms < 1000) return `${ms.toFixed(0)} ms`
  return `${(ms / 1000).toFixed(ms < 100_000 ? 1 : 0)} s`
}

/** Picks the cause a failed ping reports, most specific first. */
export function explainPingFailure (f: PingFailureFacts): PingFailure {
  if (f.droppedByUs?.reason === 'relay-restarted') {
    return { cause: 'relay-reset', retry: true, message: `the relayed session through ${f.droppedByUs.relay} was reset because the relay restarted; re-establishing (retry in a moment)` }
  }
  if (f.droppedByUs?.reason === 'relay-down') {
    return { cause: 'relay-down', retry: true, message: `the relayed session through ${f.droppedByUs.relay} was closed because the relay stopped answering; re-dialling (retry in a moment)` }
  }
  const restart = f.recentRelayRestart != null
    ? `; relay ${f.recentRelayRestart.relay} restarted ${formatDuration(f.recentRelayRestart.agoMs)} ago and sessions through it are being re-established (retry in a moment)`
    : ''
  if (f.phase === 'connect') {
    if (f.timedOut) return { cause: 'timeout', retry: false, message: `no connection to ${f.node} within the ping's deadline${restart}` }
    return { cause: 'unreachable', retry: false, message: `${f.error}${restart}` }
  }
  const conn = `the ${f.path ?? 'tunnel'} connection${f.remote != null ? ` to ${f.remote}` : ''}`
  if (!f.connectionOpen) {
    // a connection this ping dialled that closes before its first stream: the peer accepted
    // the handshake, then refused us (not in its directory, or another pre-shared key)
    if (f.connection !== 'existing' && f.phase === 'stream') {
      return { cause: 'refused', retry: false, message: `the peer closed the connection right after the handshake (does it list this node in its peer directory, with the same pre-shared key?)` }
    }
    // a connection that was already open went away (NAT mapping lost, peer restarted, relay
    // connection dropped): a fresh one may well work
    return { cause: 'closed', retry: f.connection === 'existing', message: `${conn} closed while ${PHASE_TEXT[f.phase]}: ${f.error}${restart}` }
  }
  if (f.timedOut) return { cause: 'timeout', retry: false, message: `no answer within the ping's deadline while ${PHASE_TEXT[f.phase]} on ${conn}${restart}` }
  return { cause: 'error', retry: false, message: `${f.error} while ${PHASE_TEXT[f.phase]} on ${conn}` }
}

export interface PingTimings { connectMs?: number, connection?: ConnectionOrigin, streamOpenMs?: number, totalMs: number }

/** The phases a failed attempt got through, for the end of its error message. */
export function formatFailedPhases (t: PingTimings): string {
  const parts: string[] = []
  if (t.connectMs != null) parts.push(`connect ${formatDuration(t.connectMs)}${t.connection != null ? ` (${originText(t.connection)})` : ''}`)
  if (t.streamOpenMs != null) parts.push(`stream open ${formatDuration(t.streamOpenMs)}`)
  parts.push(`failed after ${formatDuration(t.totalMs)}`)
  return parts.join(', ')
}

export function originText (o: ConnectionOrigin): string {
  return o === 'existing' ? 'existing' : o === 'dialled' ? 'dialled' : 'joined a dial in progress'
}

/** min/avg/max of the round trips; the single-figure rttMs stays the minimum. */
export function rttSummary (rtts: number[]): { rttMs: number, rttAvgMs: number, rttMaxMs: number } {
  const sum = rtts.reduce((a, b) => a + b, 0)
  return { rttMs: round(Math.min(...rtts)), rttAvgMs: round(sum / rtts.length), rttMaxMs: round(Math.max(...rtts)) }
}

export function round (ms: number): number { return Math.round(ms * 1000) / 1000 }
