// npm run bench:tunnel — every tunnel path measured side by side in one lab run.
// Sites: a (cone), b (cone), c (symmetric), d (UDP blocked). The baselines use a TCP port
// forward on b's NAT: plain TCP (iperf3) and libp2p TCP + noise + yamux (the same agent
// stack, dialed at the forwarded address). Prints a table, then one JSON line (last line).
import { readFile } from 'node:fs/promises'
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh } from '../lab/mesh.ts'
import { renderTable } from '../../shared/table.ts'
import { sleep } from '../lab/wait.ts'

const MiB = 1024 * 1024
const BULK = Number(process.env.BENCH_BYTES ?? 256 * MiB)
const FIRST_BYTE_RUNS = Number(process.env.BENCH_RUNS ?? 7)
const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`) }

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }

async function main (): Promise<void> {
  let lab: Lab | undefined
  let mesh: Mesh | undefined
  try {
    lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }, { name: 'c', nat: 'symmetric' }, { name: 'd', nat: 'udp-blocked' }] })
    mesh = await Mesh.start(lab, { agents: ['a1', 'b1', 'c1', 'd1'] })
    const bPublic = lab.site('b').publicIp
    await lab.portForward('b', 'tcp', 15201, 'b1', 5201)
    await lab.portForward('b', 'tcp', 14004, 'b1', 4004)
    const via = `/ip4/${bPublic}/tcp/14004`
    const call = async <T = any>(path: string): Promise<T> => await mesh!.call<T>('a1', 'POST', path, 300_000)

    // warm up every path once (JIT, connection setup) so bulk numbers compare steady states
    for (const to of ['edge-b1', 'edge-c1', 'edge-d1']) await call(`/ping?node=${to}`)
    await sleep(1_500)

    log('plain TCP (iperf3 through the port forward)')
    const iperfd = lab.spawn('b1', ['iperf3', '-s', '-p', '5201', '-1', '--forceflush'])
    await iperfd.waitForLine(/Server listening/, 10_000)
    const ip = await lab.exec('a1', ['iperf3', '-c', bPublic, '-p', '15201', '-n', String(BULK), '--json'], { timeoutMs: 120_000 })
    const plainTcp = JSON.parse(ip.stdout).end.sum_received.bits_per_second / 1e6

    const bulk = async (node: string, v?: string): Promise<{ mbps: number, path: string }> =>
      await call(`/diag/transfer?node=${node}&direction=discard&bytes=${BULK}${v != null ? `&via=${encodeURIComponent(v)}` : ''}`)

    log('libp2p TCP + noise + yamux (same port forward)')
    const libp2pTcp = await bulk('edge-b1', via)
    log('direct UDP (punched UDX + noise + yamux)')
    await call('/diag/disconnect?node=edge-b1')
    const directUdp = await bulk('edge-b1')
    log('relay UDP (blind UDX relay)')
    const relayUdp = await bulk('edge-c1')
    log('relay TCP (circuit relay v2)')
    const relayTcp = await bulk('edge-d1')
    for (const [name, r, want] of [['libp2p tcp', libp2pTcp, 'direct-tcp'], ['direct udp', directUdp, 'direct-udp'], ['relay udp', relayUdp, 'relay-udp'], ['relay tcp', relayTcp, 'relay-tcp']] as const) {
      if (r.path !== want) throw new Error(`${name} ran over ${r.path}, expected ${want}`)
    }

    log('dial -> first echoed byte')
    const firstBytes = async (node: string, v?: string): Promise<number[]> => {
      const out: number[] = []
      for (let i = 0; i < FIRST_BYTE_RUNS; i++) {
        const r = await call<{ ms: number, path: string }>(`/diag/first-byte?node=${node}${v != null ? `&via=${encodeURIComponent(v)}` : ''}`)
        out.push(r.ms)
        await sleep(100)
      }
      return out
    }
    const fbTcp = await firstBytes('edge-b1', via)
    const fbDirect = await firstBytes('edge-b1')
    const fbSym = await firstBytes('edge-c1')

    log('idle agent RSS')
    await call('/diag/disconnect?node=edge-b1')
    await sleep(5_000)
    const status = await readFile(`/proc/${mesh.agent('d1').proc.pid}/status`, 'utf8')
    const rssMb = Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024

    const rows: Array<[string, string, string, string]> = [
      ['plain TCP (iperf3, port forward)', plainTcp.toFixed(0), '-', '-'],
      ['libp2p TCP + noise + yamux', libp2pTcp.mbps.toFixed(0), median(fbTcp).toFixed(1), 'baseline'],
      ['direct-udp (punched)', directUdp.mbps.toFixed(0), median(fbDirect).toFixed(1), `${(directUdp.mbps / libp2pTcp.mbps).toFixed(2)}x libp2p tcp`],
      ['relay-udp (blind UDX relay)', relayUdp.mbps.toFixed(0), median(fbSym).toFixed(1), `${(relayUdp.mbps / directUdp.mbps).toFixed(2)}x direct`],
      ['relay-tcp (circuit v2)', relayTcp.mbps.toFixed(0), '-', `${(relayTcp.mbps / directUdp.mbps).toFixed(2)}x direct`]
    ]
    process.stdout.write(`\ntunnel benchmark: ${BULK / MiB} MiB per bulk run, ${FIRST_BYTE_RUNS} first-byte runs (median); 2 cores shared by every process\n\n`)
    process.stdout.write(renderTable(['path', 'Mbit/s', 'first byte ms', 'ratio'], rows) + '\n')
    process.stdout.write(`\nfirst byte samples ms: tcp ${fbTcp.join(' ')} | direct ${fbDirect.join(' ')} | symmetric ${fbSym.join(' ')}\nidle agent RSS: ${rssMb.toFixed(1)} MB\n\n`)
    const result = {
      plain_tcp_mbps: +plainTcp.toFixed(1),
      libp2p_tcp_mbps: libp2pTcp.mbps,
      direct_udp_mbps: directUdp.mbps,
      relay_udp_mbps: relayUdp.mbps,
      relay_tcp_mbps: relayTcp.mbps,
      libp2p_tcp_first_byte_ms: median(fbTcp),
      first_byte_ms_direct: median(fbDirect),
      first_byte_ms_symmetric: median(fbSym),
      agent_idle_rss_mb: +rssMb.toFixed(1)
    }
    process.stdout.write(JSON.stringify(result) + '\n')
  } finally {
    await mesh?.stop()
    await lab?.teardown()
  }
}

await main()
