// The real `edgemesh` binary (bin/edgemesh.js, runs dist/: `npx tsc -p tsconfig.build.json`)
// against a real control API on a unix socket: bad ping/transfer arguments are one line and
// exit 2 before anything is asked of the agent; an agent with diagnostics off gets one line
// naming the config key; the API refuses out-of-range counts and sizes with a 400.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { Server } from 'node:http'
import { startControlApi } from '../../agent/control/api.ts'
import { callAgent } from '../../agent/control/cli.ts'
import type { Tunnel } from '../../agent/tunnel/tunnel.ts'
import { stopHttp } from '../../shared/http.ts'
import { Metrics } from '../../shared/metrics.ts'
import { createLogger } from '../../shared/logging.ts'

const CLI_BIN = resolve(import.meta.dirname, '../../bin/edgemesh.js')
let dir: string
let socket: string
let server: Server
const pinged: Array<{ node: string, count: number | undefined }> = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-cli-'))
  socket = join(dir, 'agent.sock')
  // only ping is reached: every other route here refuses before touching the tunnel
  const tunnel = {
    ping: async (node: string, opts: { count?: number }) => {
      pinged.push({ node, count: opts.count })
      return { node, path: 'direct-udp', remote: '198.51.100.21:4003', rttMs: 0.5, rttAvgMs: 0.6, rttMaxMs: 0.7, rttsMs: [0.5, 0.6, 0.7], connectMs: 0.01, connection: 'existing', streamOpenMs: 0.8, totalMs: 2.9 }
    }
  } as unknown as Tunnel
  server = await startControlApi({ socketPath: socket, tunnel, metrics: new Metrics({ processMetrics: false }), diagnostics: false, log: createLogger({ name: 'test', level: 'silent' }) })
})

afterAll(async () => {
  if (server != null) await stopHttp(server)
  await rm(dir, { recursive: true, force: true })
})

async function cli (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return await new Promise((resolve) => {
    execFile(process.execPath, [CLI_BIN, '--socket', socket, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : Number((err as any).code), stdout, stderr })
    })
  })
}

describe('edgemesh ping and transfer: arguments', () => {
  it.each([
    [['ping', 'edge-b1', '-c', '0'], 'error: -c 0: the probe count must be an integer from 1 to 100\n'],
    [['ping', 'edge-b1', '-c', 'abc'], 'error: -c abc: the probe count must be an integer from 1 to 100\n'],
    [['transfer', 'edge-b1', '--size', 'lots'], 'error: --size lots: expected a size such as 4096, 64K, 100M or 2G (K/M/G are powers of 1024, KB/MB/GB of 1000)\n'],
    [['transfer', 'edge-b1', '--bytes', '1.5'], 'error: --bytes 1.5: expected a whole number of bytes (or use --size 100M)\n'],
    [['transfer', 'edge-b1', '--direction', 'sideways'], 'error: --direction sideways: expected send (to <node>) or receive (from <node>)\n'],
    [['transfer', 'edge-b1', '--via', 'relay-udp'], 'error: --via relay-udp: expected the node\'s TCP address, as 203.0.113.5:4004 or /ip4/203.0.113.5/tcp/4004\n'],
    [['transfer'], 'error: transfer: missing <node> (usage: edgemesh transfer <node> [--size 100M] [--direction send|receive] [--via ADDR])\n']
  ])('%j: one line, exit 2, the agent is not asked', async (args, message) => {
    const before = pinged.length
    const r = await cli(args)
    expect(r).toEqual({ code: 2, stdout: '', stderr: message })
    expect(pinged.length).toBe(before)
  })

  it('a valid ping prints every phase (and -c reaches the agent)', async () => {
    const r = await cli(['ping', 'edge-b1', '-c', '3'])
    expect(r).toEqual({ code: 0, stderr: '', stdout: 'pong from edge-b1 via direct-udp 198.51.100.21:4003: rtt 0.50 ms (min of 3; avg 0.60 ms, max 0.70 ms), connect 0.01 ms (existing), stream open 0.80 ms, total 2.90 ms\n' })
    expect(pinged.at(-1)).toEqual({ node: 'edge-b1', count: 3 })
    const json = JSON.parse((await cli(['ping', 'edge-b1', '--json'])).stdout)
    expect(json).toMatchObject({ connection: 'existing', streamOpenMs: 0.8, totalMs: 2.9, rttsMs: [0.5, 0.6, 0.7] })
  })
})

describe('edgemesh transfer against an agent with diagnostics off', () => {
  it('one line naming the config key, exit 1', async () => {
    const r = await cli(['transfer', 'edge-b1', '--size', '1M'])
    expect(r).toEqual({ code: 1, stdout: '', stderr: `error: the agent at ${socket} has diagnostics off: set "diagnostics: true" in its config file (or start it with --set diagnostics=true) and restart it\n` })
  })
})

describe('control API bounds', () => {
  it('ping counts outside 1..100 are a 400 naming the parameter', async () => {
    for (const count of ['0', 'abc', '101']) {
      const err = await callAgent(socket, 'POST', `/ping?node=edge-b1&count=${count}`).catch((e: unknown) => e)
      expect(err).toMatchObject({ status: 400, message: 'query parameter "count" must be an integer from 1 to 100' })
    }
  })
})
