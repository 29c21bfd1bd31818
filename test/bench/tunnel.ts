// npm run bench:tunnel — every tunnel path measured side by side in one lab run.
// Sites: a (cone), b (cone), c (symmetric), d (UDP blocked). The baselines use a TCP port
// forward on b's NAT: plain TCP (iperf3) and libp2p TCP + noise + yamux (the same agent
// stack, dialed at the forwarded address). Prints a table, then one JSON line (last line).
import { readFile } from 'node:fs/promises'
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh } from '../lab/mesh.ts'
import { renderTable } from '../../shared/table.ts'
import { sleep } from '../lab/wait.ts'
import { memBackUnder, settledMem } from '../lab/rss.ts'

const MiB = 1024 * 1024
const BULK = Number(process.env.BENCH_BYTES ?? 128 * MiB)
const FIRST_BYTE_RUNS = Number(process.env.BENCH_RUNS ?? 7)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const RAW_UDX = new URL('./udx-raw.ts', import.meta.url).pathname
const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`) }

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }

async function main (): Promise<void> {
  let lab: Lab | undefined
  let mesh: Mesh | undefined
  try {
    // a2 is the idle agent: it registers, holds a tunnel (one ping) and carries no bulk traffic
    lab = await createLab({ sites: [{ name: 'a', nat: 'cone', hosts: 2 }, { name: 'b', nat: 'cone' }, { name: 'c', nat: 'symmetric' }, { name: 'd', nat: 'udp-blocked' }] })
    mesh = await Mesh.start(lab, { agents: ['a1', 'a2', 'b1', 'c1', 'd1'] })
    const bPublic = lab.site('b').publicIp
    await lab.portForward('b', 'tcp', 15201, 'b1', 5201)
    await lab.portForward('b', 'tcp', 14004, 'b1', 4004)
    const via = `/ip4/${bPublic}/tcp/14004`
    const call = async <T = any>(path: string): Promise<T> => await mesh!.call<T>('a1', 'POST', path, 300_000)

    // warm up every path once (JIT, connection setup) so bulk numbers compare steady states
    for (const to of ['edge-b1', 'edge-c1', 'edge-d1']) await call(`/ping?node=${to}`)
    await mesh.call('a2', 'POST', '/ping?node=edge-b1')
    await sleep(1_500)
    const relayPid = mesh.relays[0]!.proc.pid
    const relayIdle = await settledMem(relayPid)

    log('plain TCP (iperf3 through the port forward)')
    const iperfd = lab.spawn('b1', ['iperf3', '-s', '-p', '5201', '-1', '--forceflush'])
    await iperfd.waitForLine(/Server listening/, 10_000)
    const ip = await lab.exec('a1', ['iperf3', '-c', bPublic, '-p', '15201', '-n', String(BULK), '--json'], { timeoutMs: 120_000 })
    const plainTcp = JSON.parse(ip.stdout).end.sum_received.bits_per_second / 1e6

    log('raw udx-native, no crypto or multiplexing (a1 -> relay host through one NAT)')
    const rawBytes = 4 * BULK
    const rawRecv = lab.spawn('relay0', [process.execPath, RAW_UDX, 'recv', '9101', '9102', lab.site('a').publicIp, String(rawBytes)])
    await sleep(300)
    const rawSend = lab.spawn('a1', [process.execPath, RAW_UDX, 'send', '9102', '9101', lab.relays[0]!.ip, String(rawBytes)])
    const rawUdx = JSON.parse(await rawRecv.waitForLine(/mbps/, 120_000)).mbps as number
    await rawSend.kill()

    const bulk = async (node: string, v?: string): Promise<{ mbps: number, path: string }> =>
      await call(`/diag/transfer?node=${node}&direction=discard&bytes=${BULK}${v != null ? `&via=${encodeURIComponent(v)}` : ''}`)

    // Bulk runs go round-robin over the paths: one warm-up round (JIT, congestion windows),
    // then ROUNDS measured rounds; each path's median is reported. Interleaving keeps a slow
    // phase of the machine from landing on one path only.
    const paths = [
      { key: 'libp2p_tcp', node: 'edge-b1', via, want: 'direct-tcp' },
      { key: 'direct_udp', node: 'edge-b1', via: undefined, want: 'direct-udp' },
      { key: 'relay_udp', node: 'edge-c1', via: undefined, want: 'relay-udp' },
      { key: 'relay_tcp', node: 'edge-d1', via: undefined, want: 'relay-tcp' }
    ]
    const samples: Record<string, number[]> = Object.fromEntries(paths.map((p) => [p.key, []]))
    for (let round = 0; round <= ROUNDS; round++) {
      log(round === 0 ? 'bulk warm-up round' : `bulk round ${round}/${ROUNDS}`)
      for (const p of paths) {
        const r = await bulk(p.node, p.via).catch((err) => { throw new Error(`${p.key}: ${err.message}`) })
        if (r.path !== p.want) throw new Error(`${p.key} ran over ${r.path}, expected ${p.want}`)
        if (round > 0) samples[p.key]!.push(r.mbps)
      }
    }
    const libp2pTcp = { mbps: median(samples.libp2p_tcp!) }
    const directUdp = { mbps: median(samples.direct_udp!) }
    const relayUdp = { mbps: median(samples.relay_udp!) }
    const relayTcp = { mbps: median(samples.relay_tcp!) }

    log('dial -> first echoed byte')
    // interleaved like the bulk runs, so machine noise spreads over all three
    const fbTcp: number[] = []; const fbDirect: number[] = []; const fbSym: number[] = []
    const firstByte = async (node: string, v?: string): Promise<number> =>
      (await call<{ ms: number, path: string }>(`/diag/first-byte?node=${node}${v != null ? `&via=${encodeURIComponent(v)}` : ''}`)).ms
    for (let i = 0; i < FIRST_BYTE_RUNS; i++) {
      fbTcp.push(await firstByte('edge-b1', via)); await sleep(100)
      fbDirect.push(await firstByte('edge-b1')); await sleep(100)
      fbSym.push(await firstByte('edge-c1')); await sleep(100)
    }

    log('agent RSS')
    await sleep(3_000)
    // the relay after every relayed byte: back near idle (the lowest within 30 s of the traffic)
    const relayAfter = (await memBackUnder(relayPid, relayIdle.rssMb + 5, 30_000)).sample
    const rssOf = async (host: string): Promise<number> => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${mesh!.agent(host).proc.pid}/status`, 'utf8'))![1]) / 1024
    const rssMb = await rssOf('a2')
    const rssBusyMb = await rssOf('b1')

    const rows: Array<[string, string, string, string]> = [
      ['plain TCP (iperf3, port forward)', plainTcp.toFixed(0), '-', '-'],
      ['libp2p TCP + noise + yamux', libp2pTcp.mbps.toFixed(0), median(fbTcp).toFixed(1), 'baseline'],
      ['udx raw, no crypto/mux (reference)', rawUdx.toFixed(0), '-', `${(rawUdx / libp2pTcp.mbps).toFixed(2)}x libp2p tcp`],
      ['direct-udp (punched)', directUdp.mbps.toFixed(0), median(fbDirect).toFixed(1), `${(directUdp.mbps / libp2pTcp.mbps).toFixed(2)}x libp2p tcp`],
      ['relay-udp (blind UDX relay)', relayUdp.mbps.toFixed(0), median(fbSym).toFixed(1), `${(relayUdp.mbps / directUdp.mbps).toFixed(2)}x direct`],
      ['relay-tcp (circuit v2)', relayTcp.mbps.toFixed(0), '-', `${(relayTcp.mbps / directUdp.mbps).toFixed(2)}x direct`]
    ]
    process.stdout.write(`\ntunnel benchmark: ${BULK / MiB} MiB per bulk run, median of ${ROUNDS} interleaved rounds after a warm-up round; ${FIRST_BYTE_RUNS} first-byte runs (median); 2 cores shared by every process\n\n`)
    process.stdout.write(renderTable(['path', 'Mbit/s', 'first byte ms', 'ratio'], rows) + '\n')
    process.stdout.write(`\nbulk samples Mbit/s: ${Object.entries(samples).map(([k, v]) => `${k} ${v.join(' ')}`).join(' | ')}\nfirst byte samples ms: tcp ${fbTcp.join(' ')} | direct ${fbDirect.join(' ')} | symmetric ${fbSym.join(' ')}\nagent RSS: idle ${rssMb.toFixed(1)} MB (a2: registered, one tunnel, no bulk traffic); after bulk ${rssBusyMb.toFixed(1)} MB (b1)\nrelay RSS: idle ${relayIdle.rssMb} MiB, after ${(ROUNDS + 1) * BULK / MiB} MiB each over relay-udp and relay-tcp ${relayAfter.rssMb} MiB\n\n`)
    const result = {
      plain_tcp_mbps: +plainTcp.toFixed(1),
      udx_raw_mbps: rawUdx,
      libp2p_tcp_mbps: libp2pTcp.mbps,
      direct_udp_mbps: directUdp.mbps,
      relay_udp_mbps: relayUdp.mbps,
      relay_tcp_mbps: relayTcp.mbps,
      libp2p_tcp_first_byte_ms: median(fbTcp),
      first_byte_ms_direct: median(fbDirect),
      first_byte_ms_symmetric: median(fbSym),
      agent_idle_rss_mb: +rssMb.toFixed(1),
      agent_rss_after_bulk_mb: +rssBusyMb.toFixed(1),
      relay_rss_idle_mb: relayIdle.rssMb,
      relay_rss_after_mb: relayAfter.rssMb
    }
    process.stdout.write(JSON.stringify(result) + '\n')
  } finally {
    await mesh?.stop()
    await lab?.teardown()
  }
}

await main()
