// Unit tests for what `edgemesh ping` and `edgemesh transfer` report: the phases of a ping, the
// cause a failed ping names (agent/tunnel/ping-outcome.ts), and the CLI's argument checks and
// lines (agent/control/ping-transfer.ts).
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../shared/errors.ts'
import { explainPingFailure, formatDuration, formatFailedPhases, rttSummary, type PingFailureFacts, type PingResult } from '../../agent/tunnel/ping-outcome.ts'
import { diagnosticsOffMessage, formatPong, formatTransfer, parsePingCount, parseSize, parseTransferArgs, parseVia, transferQuery } from '../../agent/control/ping-transfer.ts'

const MiB = 1024 * 1024

describe('ping output', () => {
  const pong: PingResult = {
    node: 'edge-b1', path: 'direct-udp', remote: '198.51.100.21:4003',
    rttMs: 0.912, rttAvgMs: 0.95, rttMaxMs: 1.021, rttsMs: [0.912, 0.917, 1.021],
    connectMs: 6.213, connection: 'dialled', streamOpenMs: 3104.2, totalMs: 3213.9
  }

  it('shows every phase, so a slow stream open is visible', () => {
    expect(formatPong(pong)).toBe('pong from edge-b1 via direct-udp 198.51.100.21:4003: rtt 0.91 ms (min of 3; avg 0.95 ms, max 1.02 ms), connect 6.21 ms (dialled), stream open 3.1 s, total 3.2 s')
  })

  it('names how the connection was had, one probe, and a retry with its cause', () => {
    const line = formatPong({ ...pong, rttsMs: [0.5], rttMs: 0.5, rttAvgMs: 0.5, rttMaxMs: 0.5, connection: 'existing', connectMs: 0.004, streamOpenMs: 0.81, totalMs: 2412, failedAttemptMs: 2301.5, retriedAfter: 'the relayed session through 198.51.100.10:4002 was reset because the relay restarted; re-establishing (retry in a moment)' })
    expect(line).toBe('pong from edge-b1 via direct-udp 198.51.100.21:4003: rtt 0.50 ms (1 probe), connect 0.00 ms (existing), stream open 0.81 ms, total 2.4 s; retried once on a fresh connection after the first attempt failed in 2.3 s: the relayed session through 198.51.100.10:4002 was reset because the relay restarted; re-establishing (retry in a moment)')
    expect(formatPong({ ...pong, connection: 'joined' })).toContain('connect 6.21 ms (joined a dial in progress)')
  })

  it('durations: two decimals below 10 ms, then ms, then seconds', () => {
    expect([0.912, 6.213, 42.26, 312.4, 3104, 123_456].map(formatDuration)).toEqual(['0.91 ms', '6.21 ms', '42.3 ms', '312 ms', '3.1 s', '123 s'])
  })

  it('rtt summary: min (the single figure), avg, max, rounded to microseconds', () => {
    expect(rttSummary([1.0004, 3, 2])).toEqual({ rttMs: 1, rttAvgMs: 2, rttMaxMs: 3 })
  })

  it('a failed attempt lists the phases it got through', () => {
    expect(formatFailedPhases({ connectMs: 0.02, connection: 'existing', totalMs: 1210 })).toBe('connect 0.02 ms (existing), failed after 1.2 s')
    expect(formatFailedPhases({ totalMs: 15_000 })).toBe('failed after 15.0 s')
  })
})

describe('the cause a failed ping names', () => {
  const base: PingFailureFacts = {
    node: 'edge-c1', phase: 'stream', error: 'relay restarted', timedOut: false,
    connection: 'existing', path: 'relay-udp', remote: '198.51.100.10:4002', connectionOpen: false
  }

  it('our own relay-restart handling closed the connection: says so, and retries', () => {
    const f = explainPingFailure({ ...base, droppedByUs: { relay: '198.51.100.10:4002', reason: 'relay-restarted' } })
    expect(f).toEqual({
      cause: 'relay-reset',
      retry: true,
      message: 'the relayed session through 198.51.100.10:4002 was reset because the relay restarted; re-establishing (retry in a moment)'
    })
    expect(f.message).not.toContain('pre-shared key')
  })

  it('a relayed connection we closed on a freshly dialled connection is still the relay, not a refusal', () => {
    const f = explainPingFailure({ ...base, connection: 'dialled', droppedByUs: { relay: '198.51.100.10:4002', reason: 'relay-restarted' } })
    expect(f.cause).toBe('relay-reset')
  })

  it('relay stopped answering: names it, retries', () => {
    const f = explainPingFailure({ ...base, phase: 'echo', droppedByUs: { relay: '198.51.100.10:4002', reason: 'relay-down' } })
    expect(f).toMatchObject({ cause: 'relay-down', retry: true })
    expect(f.message).toBe('the relayed session through 198.51.100.10:4002 was closed because the relay stopped answering; re-dialling (retry in a moment)')
  })

  it('the PSK/directory hint only when a connection this ping dialled closes before its first stream', () => {
    for (const connection of ['dialled', 'joined'] as const) {
      const f = explainPingFailure({ ...base, connection, path: 'direct-tcp', remote: '10.1.0.3:4004' })
      expect(f.cause).toBe('refused')
      expect(f.retry).toBe(false)
      expect(f.message).toBe('the peer closed the connection right after the handshake (does it list this node in its peer directory, with the same pre-shared key?)')
    }
    // an existing connection that went away is not a refusal: say what closed and retry
    const stale = explainPingFailure({ ...base, path: 'direct-udp', remote: '198.51.100.21:4003', error: 'connection reset' })
    expect(stale).toEqual({ cause: 'closed', retry: true, message: 'the direct-udp connection to 198.51.100.21:4003 closed while opening the ping stream: connection reset' })
    // a dialled connection that closes after its stream opened is not a refusal either
    const later = explainPingFailure({ ...base, connection: 'dialled', phase: 'echo', error: 'stream reset' })
    expect(later).toMatchObject({ cause: 'closed', retry: false })
    expect(later.message).not.toContain('pre-shared key')
  })

  it('a closed relayed connection soon after a relay restart mentions the restart', () => {
    const f = explainPingFailure({ ...base, path: 'relay-tcp', remote: '198.51.100.10:4001 (circuit)', error: 'connection closed', recentRelayRestart: { relay: '198.51.100.10:4002', agoMs: 2100 } })
    expect(f.cause).toBe('closed')
    expect(f.message).toBe('the relay-tcp connection to 198.51.100.10:4001 (circuit) closed while opening the ping stream: connection closed; relay 198.51.100.10:4002 restarted 2.1 s ago and sessions through it are being re-established (retry in a moment)')
  })

  it('dial failures keep the dialer\'s reasons; timeouts say which phase; other errors name the phase', () => {
    expect(explainPingFailure({ node: 'edge-a1', phase: 'connect', error: 'cannot reach edge-a1: hole punching failed', timedOut: false, connectionOpen: false }))
      .toEqual({ cause: 'unreachable', retry: false, message: 'cannot reach edge-a1: hole punching failed' })
    expect(explainPingFailure({ node: 'edge-a1', phase: 'connect', error: 'aborted', timedOut: true, connectionOpen: false }).message)
      .toBe('no connection to edge-a1 within the ping\'s deadline')
    expect(explainPingFailure({ ...base, connectionOpen: true, timedOut: true, error: 'aborted' }))
      .toEqual({ cause: 'timeout', retry: false, message: 'no answer within the ping\'s deadline while opening the ping stream on the relay-udp connection to 198.51.100.10:4002' })
    expect(explainPingFailure({ ...base, phase: 'echo', connectionOpen: true, error: 'corrupted echo' }))
      .toEqual({ cause: 'error', retry: false, message: 'corrupted echo while waiting for the echo on the relay-udp connection to 198.51.100.10:4002' })
  })
})

describe('ping and transfer arguments', () => {
  const rejects = (fn: () => unknown, message: string): void => {
    let err: unknown
    try { fn() } catch (e) { err = e }
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toBe(message)
    expect((err as Error).message).not.toContain('\n')
  }

  it('-c is an integer from 1 to 100', () => {
    expect(parsePingCount('1')).toBe(1)
    expect(parsePingCount('100')).toBe(100)
    rejects(() => parsePingCount('0'), '-c 0: the probe count must be an integer from 1 to 100')
    rejects(() => parsePingCount('abc'), '-c abc: the probe count must be an integer from 1 to 100')
    rejects(() => parsePingCount('2.5'), '-c 2.5: the probe count must be an integer from 1 to 100')
    rejects(() => parsePingCount('101'), '-c 101: the probe count must be an integer from 1 to 100')
  })

  it('sizes: K/M/G are powers of 1024, KB/MB/GB of 1000, fractions allowed', () => {
    expect(parseSize('4096')).toBe(4096)
    expect(parseSize('64K')).toBe(64 * 1024)
    expect(parseSize('100M')).toBe(100 * MiB)
    expect(parseSize('100MiB')).toBe(100 * MiB)
    expect(parseSize('1.5g')).toBe(1.5 * 1024 ** 3)
    expect(parseSize('10MB')).toBe(10_000_000)
    expect(parseSize('64G')).toBe(64 * 1024 ** 3)
    rejects(() => parseSize('lots'), '--size lots: expected a size such as 4096, 64K, 100M or 2G (K/M/G are powers of 1024, KB/MB/GB of 1000)')
    rejects(() => parseSize('10X'), '--size 10X: expected a size such as 4096, 64K, 100M or 2G (K/M/G are powers of 1024, KB/MB/GB of 1000)')
    rejects(() => parseSize('-5M'), '--size -5M: expected a size such as 4096, 64K, 100M or 2G (K/M/G are powers of 1024, KB/MB/GB of 1000)')
    rejects(() => parseSize('0'), '--size 0: must be from 1 byte to 64G')
    rejects(() => parseSize('65G'), '--size 65G: must be from 1 byte to 64G')
  })

  it('transfer: defaults, one of --bytes/--size, the direction, the node', () => {
    expect(parseTransferArgs('edge-b1', {})).toEqual({ node: 'edge-b1', bytes: 16 * MiB, direction: 'send' })
    expect(parseTransferArgs('edge-b1', { bytes: '1000', direction: 'receive' })).toEqual({ node: 'edge-b1', bytes: 1000, direction: 'receive' })
    expect(parseTransferArgs('edge-b1', { size: '8M', via: '10.1.0.3:4004' })).toEqual({ node: 'edge-b1', bytes: 8 * MiB, direction: 'send', via: '/ip4/10.1.0.3/tcp/4004' })
    rejects(() => parseTransferArgs('edge-b1', { bytes: '8M' }), '--bytes 8M: expected a whole number of bytes (or use --size 100M)')
    rejects(() => parseTransferArgs('edge-b1', { bytes: '1', size: '1M' }), '--bytes and --size: give one of them')
    rejects(() => parseTransferArgs('edge-b1', { direction: 'up' }), '--direction up: expected send (to <node>) or receive (from <node>)')
    rejects(() => parseTransferArgs(undefined, {}), 'transfer: missing <node> (usage: edgemesh transfer <node> [--size 100M] [--direction send|receive] [--via ADDR])')
  })

  it('--via: host:port or a TCP multiaddr', () => {
    expect(parseVia('203.0.113.5:4004')).toBe('/ip4/203.0.113.5/tcp/4004')
    expect(parseVia('/ip4/203.0.113.5/tcp/4004')).toBe('/ip4/203.0.113.5/tcp/4004')
    const msg = (v: string): string => `--via ${v}: expected the node's TCP address, as 203.0.113.5:4004 or /ip4/203.0.113.5/tcp/4004`
    for (const bad of ['relay-udp', '203.0.113.5', '203.0.113.5:0', '300.1.1.1:4004', '/ip4/203.0.113.5/udp/4003', '/nonsense']) rejects(() => parseVia(bad), msg(bad))
  })

  it('the control API query carries every argument, encoded', () => {
    expect(transferQuery({ node: 'edge b1', bytes: 42, direction: 'receive', via: '/ip4/10.1.0.3/tcp/4004' }))
      .toBe('/diag/transfer?node=edge+b1&direction=receive&bytes=42&via=%2Fip4%2F10.1.0.3%2Ftcp%2F4004')
  })
})

describe('transfer output', () => {
  const digest = 'ab'.repeat(32)
  it('bytes, time, Mbit/s, path and the digests matching', () => {
    expect(formatTransfer({ node: 'edge-b1', direction: 'send', bytes: 100 * MiB, ms: 1234.5, mbps: 679.5, path: 'direct-udp', remote: '198.51.100.21:4003', sha256Local: digest, sha256Remote: digest, match: true }, 100 * MiB))
      .toBe('sent 100.0 MiB (104857600 bytes) to edge-b1 via direct-udp 198.51.100.21:4003 in 1.2 s: 679.5 Mbit/s; SHA-256 match on both ends (abababab…abababab)')
    expect(formatTransfer({ node: 'edge-c1', direction: 'receive', bytes: 1000, ms: 3.2, mbps: 2.5, path: 'relay-udp', sha256Local: digest, sha256Remote: digest, match: true }, 1000))
      .toBe('received 1000 B (1000 bytes) from edge-c1 via relay-udp in 3.20 ms: 2.5 Mbit/s; SHA-256 match on both ends (abababab…abababab)')
  })

  it('a mismatch is loud and says how much arrived', () => {
    const other = 'cd'.repeat(32)
    expect(formatTransfer({ node: 'edge-b1', direction: 'send', bytes: 10, ms: 1, mbps: 0.1, path: 'direct-tcp', remote: '10.1.0.3:4004', sha256Local: digest, sha256Remote: other, match: false }, 20))
      .toBe('sent 10 B (10 bytes) to edge-b1 via direct-tcp 10.1.0.3:4004 in 1.00 ms: 0.1 Mbit/s; SHA-256 MISMATCH: this node abababab…abababab, edge-b1 cdcdcdcd…cdcdcdcd (10 of 20 bytes arrived)')
  })

  it('diagnostics off: one line naming the config key', () => {
    expect(diagnosticsOffMessage('/run/edgemesh/agent.sock')).toBe('the agent at /run/edgemesh/agent.sock has diagnostics off: set "diagnostics: true" in its config file (or start it with --set diagnostics=true) and restart it')
  })
})
