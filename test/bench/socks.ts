// npm run bench:socks — SOCKS5 to a node next to its floors, side by side in one lab run: two
// cone sites a and b and a relay; agents on a1 (the operator's node) and b1 (the target node:
// a real sshd, an echo server and a byte sink); a1 -> b1 is one punched direct-udp tunnel.
//   tunnel_raw_mbps       a1's /diag/transfer to edge-b1 (discard): the tunnel stream alone, the floor
//   socks_mbps            the same volume through a1's SOCKS5 listener to edge-b1's sink (test/lab/socks-probe.mjs bulk)
//   scp_mbps              scp of a file to edge-b1.edge through `edgemesh nc` (real OpenSSH: its ciphers count too);
//                         scp_openbsd_nc_mbps the same through OpenBSD `nc -X 5` (what edgemesh nc itself costs)
//   stream_open_p50_ms    opening a tunnel stream on the open connection and getting the first byte back
//                         (edgemesh ping, count 1: stream negotiation + first echo), the floor
//   socks_connect_p50_ms  TCP connect to the SOCKS listener, handshake, CONNECT edge-b1:7000, the reply, one
//                         byte echoed by the target (a new connection each time)
//   concurrent_ok         of 200 SOCKS connections opened at once, each echoing 64 KiB intact
// Bulk runs go in interleaved rounds after a warm-up round (medians); latency samples alternate
// in batches. Readable table first; the last line is one JSON object.
// Env: EDGEMESH_BENCH_SOCKS_BYTES (bulk bytes, 128 MiB), EDGEMESH_BENCH_SOCKS_SCP_BYTES (64 MiB),
// EDGEMESH_BENCH_SOCKS_ROUNDS (3), EDGEMESH_BENCH_SOCKS_SAMPLES (40 latency samples each),
// EDGEMESH_BENCH_SOCKS_CONNS (200).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLab, type Lab } from '../lab/lab.ts'
import { CLI_BIN, Mesh } from '../lab/mesh.ts'
import { clientKeys, sshOptions, startSshd } from '../lab/sshd.ts'
import { renderTable } from '../../shared/table.ts'
import { ForeignLoad, procCpu } from './machine-load.ts'

const num = (name: string, dflt: number): number => { const v = Number(process.env[name] ?? dflt); if (!Number.isInteger(v) || v <= 0) throw new Error(`${name}: positive integer`); return v }
const MiB = 1024 * 1024
const BULK = num('EDGEMESH_BENCH_SOCKS_BYTES', 128 * MiB)
const SCP_BYTES = num('EDGEMESH_BENCH_SOCKS_SCP_BYTES', 64 * MiB)
const ROUNDS = num('EDGEMESH_BENCH_SOCKS_ROUNDS', 3)
const SAMPLES = num('EDGEMESH_BENCH_SOCKS_SAMPLES', 40)
const CONNS = num('EDGEMESH_BENCH_SOCKS_CONNS', 200)
const BATCH = 5

const ROOT = join(import.meta.dirname, '../..')
const WORKLOAD = join(ROOT, 'test/lab/workload.mjs')
const PROBE = join(ROOT, 'test/lab/socks-probe.mjs')
const NODE = process.execPath
const SOCKS = '127.0.0.1:10800'
const ECHO_PORT = 7000
const SINK_PORT = 7001

const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`) }
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }
const r1 = (v: number): number => Math.round(v * 10) / 10
const r2 = (v: number): number => Math.round(v * 100) / 100

async function main (): Promise<void> {
  let lab: Lab | undefined
  let mesh: Mesh | undefined
  const dir = mkdtempSync(join(tmpdir(), 'edgemesh-bench-socks-'))
  try {
    lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }] })
    const l = lab
    const keys = await clientKeys(join(dir, 'ssh'))
    await startSshd(l, 'b1', keys, ['edge-b1', 'edge-b1.edge'])
    const echo = l.spawn('b1', [NODE, WORKLOAD, 'tcp-echo', String(ECHO_PORT)])
    const sink = l.spawn('b1', [NODE, PROBE, 'sink', String(SINK_PORT)])
    await Promise.all([echo.waitForLine(/listening/, 10_000), sink.waitForLine(/listening/, 10_000)])
    mesh = await Mesh.start(l, {
      agents: ['a1', 'b1'],
      diagnostics: true,
      agentConfig: () => ({ socks5: { listen: [SOCKS], device: '', allowedPorts: [22, ECHO_PORT, SINK_PORT] } })
    })
    const m = mesh
    const exec = async (argv: string[], timeoutMs = 300_000): Promise<string> => {
      const r = await l.exec('a1', argv, { timeoutMs })
      if (r.code !== 0) throw new Error(`${argv.slice(0, 3).join(' ')}: exit ${r.code} ${r.stderr.trim()}`)
      return r.stdout.trim()
    }
    const probe = async <T>(...args: string[]): Promise<T> => JSON.parse(await exec([NODE, PROBE, ...args]))
    const pathNow = async (): Promise<string> => (await m.status('a1')).peers.find((p: any) => p.node === 'edge-b1')?.path ?? 'none'

    // the tunnel up and punched before anything is measured
    for (let i = 0; i < 50 && (await pathNow()) !== 'direct-udp'; i++) await m.ping('a1', 'b1')
    if (await pathNow() !== 'direct-udp') throw new Error(`a1 -> b1 is ${await pathNow()}, expected direct-udp`)

    const scpFile = join(dir, 'scp.bin')
    writeFileSync(scpFile, randomBytes(SCP_BYTES))
    const nc = `${NODE} ${CLI_BIN} nc --proxy ${SOCKS} %h %p`
    const openbsdNc = `nc.openbsd -X 5 -x ${SOCKS} %h %p` // the same scp with OpenBSD nc: what edgemesh nc itself costs
    const samples: Record<'tunnel' | 'socks' | 'scp' | 'scpOpenbsd', number[]> = { tunnel: [], socks: [], scp: [], scpOpenbsd: [] }
    const scpMbps = async (proxyCommand: string): Promise<number> => {
      const t0 = performance.now()
      await exec(['scp', '-q', ...sshOptions(keys, proxyCommand), scpFile, `root@edge-b1.edge:${join(dir, 'scp-copy.bin')}`])
      return SCP_BYTES * 8 / ((performance.now() - t0) / 1000) / 1e6
    }
    // where the time goes: both agents' CPU seconds per GiB moved, for the floor and for SOCKS
    const agentsCpu = async (): Promise<number> => {
      const [a, b] = await Promise.all([procCpu(m.agent('a1').proc.pid), procCpu(m.agent('b1').proc.pid)])
      return a.user + a.sys + b.user + b.sys
    }
    const cpuPerGiB: Record<'tunnel' | 'socks', number[]> = { tunnel: [], socks: [] }
    const foreign = await ForeignLoad.start(l.namespaces, 500)
    await foreign.mark()
    for (let round = 0; round <= ROUNDS; round++) {
      log(round === 0 ? 'bulk warm-up round' : `bulk round ${round}/${ROUNDS}`)
      let c0 = await agentsCpu()
      const raw = await m.call<{ mbps: number, path: string }>('a1', 'POST', `/diag/transfer?node=edge-b1&direction=discard&bytes=${BULK}`, 300_000)
      if (raw.path !== 'direct-udp') throw new Error(`tunnel transfer ran over ${raw.path}`)
      let c1 = await agentsCpu()
      if (round > 0) cpuPerGiB.tunnel.push((c1 - c0) / (BULK / 1024 ** 3))
      c0 = c1
      const socks = await probe<{ mbps: number }>('bulk', SOCKS, 'edge-b1', String(SINK_PORT), String(BULK))
      c1 = await agentsCpu()
      if (round > 0) cpuPerGiB.socks.push((c1 - c0) / (BULK / 1024 ** 3))
      const scp = await scpMbps(nc)
      const scpOpenbsd = await scpMbps(openbsdNc)
      if (round > 0) { samples.tunnel.push(raw.mbps); samples.socks.push(socks.mbps); samples.scp.push(scp); samples.scpOpenbsd.push(scpOpenbsd) }
      log(`  tunnel ${r1(raw.mbps)}, socks ${socks.mbps}, scp ${r1(scp)} (with OpenBSD nc ${r1(scpOpenbsd)}) Mbit/s`)
    }

    const foreignBulk = await foreign.mark()
    log(`foreign CPU during the bulk rounds: ${foreignBulk.foreignPct.toFixed(1)}% of the machine${foreignBulk.foreignPct > 5 ? ' (WARNING: other work shared the machine, the ratios are skewed)' : ''}`)
    log('stream open vs SOCKS connect, to the first byte back')
    const streamOpen: number[] = []
    const socksConnect: number[] = []
    // the parts: the floor's stream negotiation and its echo; SOCKS up to its reply, then the echo
    const negotiate: number[] = []
    const echoRtt: number[] = []
    const socksReply: number[] = []
    await probe('connect-time', SOCKS, 'edge-b1', String(ECHO_PORT), '3') // warm-up
    let redialled = 0
    while (streamOpen.length < SAMPLES) {
      for (let i = 0; i < BATCH; i++) {
        const p = await m.call<{ connection: string, connectMs: number, streamOpenMs: number, rttsMs: number[] }>('a1', 'POST', '/ping?node=edge-b1&count=1')
        // a re-dialled connection is not a stream-open sample
        if (p.connection !== 'existing') { if (++redialled > SAMPLES) throw new Error('the tunnel keeps re-dialling edge-b1'); continue }
        streamOpen.push(p.connectMs + p.streamOpenMs + p.rttsMs[0]!)
        negotiate.push(p.connectMs + p.streamOpenMs); echoRtt.push(p.rttsMs[0]!)
      }
      const ct = await probe<{ samples: number[], replies: number[] }>('connect-time', SOCKS, 'edge-b1', String(ECHO_PORT), String(BATCH))
      socksConnect.push(...ct.samples); socksReply.push(...ct.replies)
    }

    log(`${CONNS} concurrent SOCKS connections`)
    const conc = await probe<{ ok: number, failed: number, errors: Record<string, number>, allMs: number }>('concurrent', SOCKS, 'edge-b1', String(ECHO_PORT), String(CONNS), String(64 * 1024))
    const path = await pathNow()
    const foreignLatency = await foreign.mark()
    foreign.stop()

    const tunnelMbps = median(samples.tunnel)
    const socksMbps = median(samples.socks)
    const scpMedian = median(samples.scp)
    const scpOpenbsdMedian = median(samples.scpOpenbsd)
    const streamP50 = median(streamOpen)
    const socksP50 = median(socksConnect)
    const rows: string[][] = [
      ['tunnel stream, discard (floor)', `${r1(tunnelMbps)} Mbit/s`, '-', '-', '-'],
      ['SOCKS5 to the node\'s sink', `${r1(socksMbps)} Mbit/s`, `${r2(socksMbps / tunnelMbps)}x floor`, '>= 0.9x', socksMbps >= 0.9 * tunnelMbps ? 'met' : 'NOT MET'],
      ['scp through edgemesh nc (OpenSSH)', `${r1(scpMedian)} Mbit/s`, `${r2(scpMedian / tunnelMbps)}x floor`, '-', '-'],
      ['scp through OpenBSD nc -X 5 (reference)', `${r1(scpOpenbsdMedian)} Mbit/s`, `${r2(scpOpenbsdMedian / tunnelMbps)}x floor`, '-', '-'],
      ['stream open + first byte (floor)', `${r2(streamP50)} ms p50`, '-', '-', '-'],
      ['SOCKS connect + first byte', `${r2(socksP50)} ms p50`, `${r2(socksP50 / streamP50)}x floor`, '<= 1.5x', socksP50 <= 1.5 * streamP50 ? 'met' : 'NOT MET'],
      [`${CONNS} concurrent SOCKS connections`, `${conc.ok} ok in ${conc.allMs} ms`, '-', `${CONNS} of ${CONNS}`, conc.ok === CONNS ? 'met' : 'NOT MET']
    ]
    process.stdout.write(`\nSOCKS5 benchmark: a1 -> edge-b1 over ${path}; bulk ${BULK / MiB} MiB, scp ${SCP_BYTES / MiB} MiB, median of ${ROUNDS} interleaved rounds after a warm-up; ${streamOpen.length}/${socksConnect.length} latency samples; 2 cores shared by every process\n\n`)
    process.stdout.write(renderTable(['measure', 'value', 'ratio', 'target', ''], rows) + '\n')
    process.stdout.write(`\nbulk samples Mbit/s: tunnel ${samples.tunnel.map(r1).join(' ')} | socks ${samples.socks.join(' ')} | scp ${samples.scp.map(r1).join(' ')} | scp with OpenBSD nc ${samples.scpOpenbsd.map(r1).join(' ')}\n` +
      `latency ms: stream open p50 ${r2(streamP50)} p90 ${r2(streamOpen.sort((a, b) => a - b)[Math.floor(streamOpen.length * 0.9)]!)}; socks connect p50 ${r2(socksP50)} p90 ${r2(socksConnect.sort((a, b) => a - b)[Math.floor(socksConnect.length * 0.9)]!)}\n` +
      `latency parts, p50 ms: floor = stream negotiation ${r2(median(negotiate))} + echo ${r2(median(echoRtt))}; SOCKS = up to the reply ${r2(median(socksReply))} (local handshake, stream to b1, b1 dials the target, its answer) + echo ${r2(median(socksConnect) - median(socksReply))}\n` +
      `concurrent: ${JSON.stringify(conc)}\n` +
      `agents' CPU (a1 + b1) per GiB moved: tunnel floor ${r2(median(cpuPerGiB.tunnel))} s, SOCKS ${r2(median(cpuPerGiB.socks))} s (the SOCKS client and the sink, separate processes, share the same 2 cores)\n` +
      `foreign CPU (processes outside this lab): ${r1(foreignBulk.foreignPct)}% of the machine during the bulk rounds, ${r1(foreignLatency.foreignPct)}% during the latency and concurrency runs\n\n`)
    process.stdout.write(JSON.stringify({
      tunnel_raw_mbps: r1(tunnelMbps),
      socks_mbps: r1(socksMbps),
      scp_mbps: r1(scpMedian),
      scp_openbsd_nc_mbps: r1(scpOpenbsdMedian),
      stream_open_p50_ms: r2(streamP50),
      socks_connect_p50_ms: r2(socksP50),
      socks_reply_p50_ms: r2(median(socksReply)),
      stream_negotiate_p50_ms: r2(median(negotiate)),
      stream_echo_p50_ms: r2(median(echoRtt)),
      concurrent_ok: conc.ok,
      path,
      agents_cpu_s_per_gib_tunnel: r2(median(cpuPerGiB.tunnel)),
      agents_cpu_s_per_gib_socks: r2(median(cpuPerGiB.socks)),
      foreign_cpu_pct: r1(foreignBulk.foreignPct)
    }) + '\n')
  } finally {
    await mesh?.stop()
    await lab?.teardown()
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
