// The pure parts of `edgemesh ping` and `edgemesh transfer`: checking their arguments (a bad
// one is a ConfigError: one line naming it, exit 2) and the lines they print.
import { multiaddr } from '@multiformats/multiaddr'
import { ConfigError } from '../../shared/errors.ts'
import { formatDuration, MAX_PING_COUNT, originText, type PingResult } from '../tunnel/ping-outcome.ts'
import { MAX_TRANSFER_BYTES } from '../tunnel/diagnostics.ts'

export const DEFAULT_TRANSFER_BYTES = 16 * 1024 ** 2

export function parsePingCount (raw: string): number {
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_PING_COUNT) throw new ConfigError(`-c ${raw}: the probe count must be an integer from 1 to ${MAX_PING_COUNT}`)
  return n
}

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gib: 1024 ** 3,
  kb: 1000, mb: 1000 ** 2, gb: 1000 ** 3
}

/** `100M` (MiB), `1.5G` (GiB), `64k`, `10MB` (decimal), `4096`: a byte count. */
export function parseSize (raw: string, option = '--size'): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(raw.trim())
  const unit = m != null ? UNITS[m[2]!.toLowerCase()] : undefined
  const bytes = m != null && unit != null ? Math.round(Number(m[1]) * unit) : NaN
  if (!Number.isSafeInteger(bytes)) throw new ConfigError(`${option} ${raw}: expected a size such as 4096, 64K, 100M or 2G (K/M/G are powers of 1024, KB/MB/GB of 1000)`)
  if (bytes < 1 || bytes > MAX_TRANSFER_BYTES) throw new ConfigError(`${option} ${raw}: must be from 1 byte to 64G`)
  return bytes
}

export interface TransferArgs { node: string, bytes: number, direction: 'send' | 'receive', via?: string }

/** The options of `edgemesh transfer <node> [--bytes N|--size 100M] [--direction send|receive] [--via ADDR]`. */
export function parseTransferArgs (node: string | undefined, o: { bytes?: string, size?: string, direction?: string, via?: string }): TransferArgs {
  if (node == null || node === '') throw new ConfigError('transfer: missing <node> (usage: edgemesh transfer <node> [--size 100M] [--direction send|receive] [--via ADDR])')
  if (o.bytes != null && o.size != null) throw new ConfigError('--bytes and --size: give one of them')
  let bytes = DEFAULT_TRANSFER_BYTES
  if (o.bytes != null) {
    if (!/^\d+$/.test(o.bytes)) throw new ConfigError(`--bytes ${o.bytes}: expected a whole number of bytes (or use --size 100M)`)
    bytes = parseSize(o.bytes, '--bytes')
  } else if (o.size != null) {
    bytes = parseSize(o.size, '--size')
  }
  const direction = o.direction ?? 'send'
  if (direction !== 'send' && direction !== 'receive') throw new ConfigError(`--direction ${direction}: expected send (to <node>) or receive (from <node>)`)
  const args: TransferArgs = { node, bytes, direction }
  if (o.via != null) args.via = parseVia(o.via)
  return args
}

/** `--via`: the node's TCP address to dial for this transfer only, host:port or a multiaddr. */
export function parseVia (raw: string): string {
  const hostPort = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(raw)
  if (hostPort != null && Number(hostPort[2]) >= 1 && Number(hostPort[2]) <= 65535 && hostPort[1]!.split('.').every((o) => Number(o) <= 255)) {
    return `/ip4/${hostPort[1]}/tcp/${hostPort[2]}`
  }
  if (raw.startsWith('/')) {
    try {
      const ma = multiaddr(raw)
      if (ma.toString().includes('/tcp/')) return raw
    } catch { /* reported below */ }
  }
  throw new ConfigError(`--via ${raw}: expected the node's TCP address, as 203.0.113.5:4004 or /ip4/203.0.113.5/tcp/4004`)
}

/** The control API query for a transfer. */
export function transferQuery (a: TransferArgs): string {
  const q = new URLSearchParams({ node: a.node, direction: a.direction, bytes: String(a.bytes) })
  if (a.via != null) q.set('via', a.via)
  return `/diag/transfer?${q.toString()}`
}

export interface TransferReport {
  node: string
  direction: 'send' | 'receive'
  bytes: number
  ms: number
  mbps: number
  path: string
  remote?: string
  sha256Local: string
  sha256Remote: string
  match: boolean
}

export function formatBytes (n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(1)} GiB`
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${n} B`
}

const short = (hex: string): string => hex.length > 16 ? `${hex.slice(0, 8)}…${hex.slice(-8)}` : hex || '(none)'

/** The line `edgemesh transfer` prints; `requested` is what was asked for. */
export function formatTransfer (r: TransferReport, requested: number): string {
  const verb = r.direction === 'send' ? `sent ${formatBytes(r.bytes)} (${r.bytes} bytes) to` : `received ${formatBytes(r.bytes)} (${r.bytes} bytes) from`
  const via = `via ${r.path}${r.remote != null ? ` ${r.remote}` : ''}`
  const digests = r.match
    ? `SHA-256 match on both ends (${short(r.sha256Local)})`
    : `SHA-256 MISMATCH: this node ${short(r.sha256Local)}, ${r.node} ${short(r.sha256Remote)}${r.bytes !== requested ? ` (${r.bytes} of ${requested} bytes arrived)` : ''}`
  return `${verb} ${r.node} ${via} in ${formatDuration(r.ms)}: ${r.mbps} Mbit/s; ${digests}`
}

/** The line `edgemesh ping` prints for a pong. */
export function formatPong (r: PingResult): string {
  const n = r.rttsMs.length
  const rtt = n === 1
    ? `rtt ${formatDuration(r.rttMs)} (1 probe)`
    : `rtt ${formatDuration(r.rttMs)} (min of ${n}; avg ${formatDuration(r.rttAvgMs)}, max ${formatDuration(r.rttMaxMs)})`
  const retried = r.retriedAfter != null
    ? `; retried once on a fresh connection after the first attempt failed${r.failedAttemptMs != null ? ` in ${formatDuration(r.failedAttemptMs)}` : ''}: ${r.retriedAfter}`
    : ''
  return `pong from ${r.node} via ${r.path} ${r.remote}: ${rtt}, connect ${formatDuration(r.connectMs)} (${originText(r.connection)}), stream open ${formatDuration(r.streamOpenMs)}, total ${formatDuration(r.totalMs)}${retried}`
}

export function diagnosticsOffMessage (socket: string): string {
  return `the agent at ${socket} has diagnostics off: set "diagnostics: true" in its config file (or start it with --set diagnostics=true) and restart it`
}
