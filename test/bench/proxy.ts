// npm run bench:proxy — the ClusterIP proxy next to its floors, measured side by side in one
// lab run (two cone sites a and b, a relay, a real etcd + kube-apiserver, agents on a1 and b1
// with the proxy on; pods: client and server-local on a1, server-remote on b1):
//   direct_local_mbps      iperf3 client pod -> server-local's pod IP (no proxy at all)
//   clusterip_local_mbps   the same to the ClusterIP of a Service whose only endpoint is
//                          server-local: kernel DNAT, no agent hop
//   tunnel_raw_mbps        a1's /diag/transfer to edge-b1 (discard), the same volume: the tunnel
//                          stream alone, no proxy, no sockets at either end
//   clusterip_remote_mbps  iperf3 client pod -> the ClusterIP of a Service whose only endpoint
//                          is server-remote: DNAT to a1's listener, the tunnel, b1 dials the pod
//   connect_p50_ms_*       new connection + GET + response (node http, agent: false), p50:
//                          direct = pod IP, local = ClusterIP (kernel DNAT), remote = ClusterIP
//                          over the tunnel
//   concurrent_conns_ok    of 1,000 connections opened at once to the remote Service's ClusterIP,
//                          each echoing a line while all are held open
//   iptables_restore_10k_ms  iptables-restore alone applying the rules of 10,000 Services x 3
//                          endpoints (a full resync over the same rules; the floor)
//   iptables_sync_10k_ms   the agent's whole full sync of the same catalog (plan, hooks, build,
//                          restore), the real ServiceProxy in a namespace of its own (a2)
//   programming_p50/p99_ms 20 Services written one by one -> first successful request from the
//                          client pod (a1), endpoint on b1; dns_visible_p50_ms: -> the name first
//                          resolving on a1, the floor (proxy-programming.ts)
//   rss_idle_mb / rss_after_traffic_mb  the agents' RSS settled before the traffic phases, and polled
//                          after them until back within 20 MiB of idle (60 s at most); the agent
//                          that grew most (proxy-rss.ts)
// Throughput and latency go in alternating rounds (medians), so machine noise lands on every path;
// the restore floor and the sync alternate too. Targets are ratios to the floors. Also reported:
// agent and machine CPU per GiB on the remote and raw paths (where a lost ratio goes), the tunnel
// echo RTT (context for the remote connect time), and the CPU taken by processes outside the
// benchmark in each phase (machine-load.ts: anything above 5% skews the ratios and is flagged).
// Readable table first; the last line is one JSON object.
// Env: EDGEMESH_BENCH_PROXY_ROUNDS (3), EDGEMESH_BENCH_PROXY_SECONDS (5 per iperf3 run),
// EDGEMESH_BENCH_PROXY_REQUESTS (200 connections per latency run), EDGEMESH_BENCH_PROXY_CONNS (1000),
// EDGEMESH_BENCH_PROXY_SERVICES (10000), EDGEMESH_BENCH_PROXY_SYNC_ROUNDS (5),
// EDGEMESH_BENCH_AGENT_NODE_OPTIONS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"; EDGEMESH_KEEP_LOGS=1 keeps agent logs).
import { readFile } from 'node:fs/promises'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { createLab, type Lab, type LabPod } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import { metricValue } from '../lab/mesh.ts'
import { eventually, sleep } from '../lab/wait.ts'
import { renderTable } from '../../shared/table.ts'
import { ForeignLoad, machineCpu, procCpu } from './machine-load.ts'
import { measureRestartGap, RESTART_GAP_TARGET_MS } from './proxy-restart.ts'
import { measureProgramming } from './proxy-programming.ts'
import { rssAfterTraffic, rssFields, rssIdle, rssRow } from './proxy-rss.ts'

const num = (name: string, dflt: number): number => { const v = Number(process.env[name] ?? dflt); if (!Number.isInteger(v) || v <= 0) throw new Error(`${name}: positive integer`); return v }
const ROUNDS = num('EDGEMESH_BENCH_PROXY_ROUNDS', 3)
const SECONDS = num('EDGEMESH_BENCH_PROXY_SECONDS', 5)
const REQUESTS = num('EDGEMESH_BENCH_PROXY_REQUESTS', 200)
const CONNS = num('EDGEMESH_BENCH_PROXY_CONNS', 1000)
const SERVICES = num('EDGEMESH_BENCH_PROXY_SERVICES', 10_000)
const SYNC_ROUNDS = num('EDGEMESH_BENCH_PROXY_SYNC_ROUNDS', 5)
const AGENT_NODE_OPTIONS = process.env.EDGEMESH_BENCH_AGENT_NODE_OPTIONS

const ROOT = join(import.meta.dirname, '../..')
const WORKLOAD = join(ROOT, 'test/lab/workload.mjs')
const IPT_HELPER = join(import.meta.dirname, 'proxy-iptables.mjs')
const NODE = process.execPath
const NS = 'bench'
const IPERF_PORT = 5201
const HTTP_PORT = 8080
const ECHO_PORT = 7000

const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`) }
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }
const r1 = (v: number): number => Math.round(v * 10) / 10
const r2 = (v: number): number => Math.round(v * 100) / 100
const r3 = (v: number): number => Math.round(v * 1000) / 1000

interface CpuSnap { at: number, a1: { user: number, sys: number }, b1: { user: number, sys: number }, machine: { busy: number, total: number } }
/** CPU use between two snapshots, in % of one core (machine: % of all cores), and machine CPU seconds spent */
interface CpuUse { a1: number, a1Sys: number, b1: number, b1Sys: number, agentsS: number, machinePct: number, machineBusyS: number }
function cpuUse (a: CpuSnap, b: CpuSnap): CpuUse {
  const s = (b.at - a.at) / 1000
  const pct = (x: number): number => 100 * x / s
  return {
    a1: pct(b.a1.user + b.a1.sys - a.a1.user - a.a1.sys), a1Sys: pct(b.a1.sys - a.a1.sys),
    b1: pct(b.b1.user + b.b1.sys - a.b1.user - a.b1.sys), b1Sys: pct(b.b1.sys - a.b1.sys),
    agentsS: b.a1.user + b.a1.sys - a.a1.user - a.a1.sys + b.b1.user + b.b1.sys - a.b1.user - a.b1.sys,
    machinePct: 100 * (b.machine.busy - a.machine.busy) / (b.machine.total - a.machine.total),
    machineBusyS: b.machine.busy - a.machine.busy
  }
}

interface Iperf { mbps: number, bytes: number, senderCpu: number, receiverCpu: number }
interface Latency { n: number, errors: number, p50: number, p90: number, p99: number }
interface Conns { ok: number, failed: number, errors: Record<string, number>, connectP50Ms: number | null, connectP99Ms: number | null, allMs: number }
interface IptResult {
  services: number, endpoints: number, backend: string, rules: number, chains: number, bytes: number, start_ms: number, first_sync: any,
  restore_ms: number, sync_ms: number, sync_report_ms: number, sync_restore_ms: number, plan_ms: number, build_ms: number, list_hooks_ms: number,
  samples: { restore: number[], sync: number[], sync_restore: number[] }
}

async function main (): Promise<void> {
  const t0 = Date.now()
  let lab: Lab | undefined
  let k: K8sMesh | undefined
  let cleaning: Promise<void> | undefined
  const cleanup = async (): Promise<void> => {
    cleaning ??= (async () => {
      await k?.stop()
      await lab?.teardown()
    })()
    await cleaning
  }
  const onSignal = (): void => { void cleanup().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    // anything else on the machine skews every number: say how busy it was before we started
    const bg0 = await machineCpu()
    await sleep(2_000)
    const bg1 = await machineCpu()
    const background = 100 * (bg1.busy - bg0.busy) / (bg1.total - bg0.total)
    log(`machine ${background.toFixed(0)}% busy before the bench (${(await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')} load)`)
    // a2 runs no agent: the 10k-Service sync runs there, away from a1's own rules
    lab = await createLab({ sites: [{ name: 'a', nat: 'cone', hosts: 2 }, { name: 'b', nat: 'cone' }] }, { onSignalTeardown: false })
    const L = lab
    // CPU used on the machine by anything that is not this benchmark, per phase
    const foreign = await ForeignLoad.start(L.namespaces, 500)
    const phases: Record<string, number> = {}
    const endPhase = async (name: string): Promise<void> => {
      const f = await foreign.mark()
      phases[name] = f.foreignPct
      const msg = `foreign CPU during ${name}: ${f.foreignPct.toFixed(1)}% of the machine (${f.foreignS.toFixed(1)} CPU s in ${f.wallS.toFixed(0)} s)`
      log(f.foreignPct > 5 ? `WARNING: ${msg}: other work shared the machine, the numbers of this phase are skewed` : msg)
    }

    // ---- iptables: 10,000 Services, the agent's full sync vs iptables-restore alone ----
    log(`iptables: ${SERVICES} Services x 3 endpoints in ${L.host('a2').ns}, ${SYNC_ROUNDS} alternating rounds`)
    const iptRun = await L.exec('a2', [NODE, IPT_HELPER, String(SERVICES), '3', String(SYNC_ROUNDS)], { timeoutMs: 600_000 })
    if (iptRun.code !== 0) throw new Error(`iptables helper: exit ${iptRun.code}\n${iptRun.stderr.slice(-3000)}`)
    process.stderr.write(iptRun.stderr)
    const ipt = JSON.parse(iptRun.stdout.trim().split('\n').at(-1)!) as IptResult
    await endPhase('iptables')
    const leftover = await L.exec('a2', ['iptables-save', '-t', 'nat'])
    if (leftover.stdout.includes('EDGEMESH')) throw new Error('the proxy left rules in a2 after stop')

    // ---- pods and their servers ----
    const pods: Record<'client' | 'local' | 'remote', LabPod> = {
      client: await L.addPod('a1'), local: await L.addPod('a1'), remote: await L.addPod('b1')
    }
    const started: Array<Promise<string>> = []
    for (const name of ['local', 'remote'] as const) {
      started.push(L.spawn(pods[name], ['iperf3', '-s', '-p', String(IPERF_PORT), '--forceflush']).waitForLine(/Server listening/, 10_000))
      started.push(L.spawn(pods[name], [NODE, WORKLOAD, 'http', `server-${name}`, String(HTTP_PORT)]).waitForLine(/listening/, 10_000))
      started.push(L.spawn(pods[name], [NODE, WORKLOAD, 'tcp-echo', String(ECHO_PORT)]).waitForLine(/listening/, 10_000))
    }
    await Promise.all(started)
    await foreign.addNamespaces(L.namespaces)

    log('starting etcd + kube-apiserver, relay, agents on a1 and b1 (proxy on)')
    k = await startK8sMesh(L, {
      agents: ['a1', 'b1'],
      diagnostics: true,
      agentConfig: () => ({ dns: {}, proxy: {} }),
      ...(AGENT_NODE_OPTIONS != null ? { agentEnv: { NODE_OPTIONS: AGENT_NODE_OPTIONS } } : {})
    })
    const K = k
    await K.admin('POST', '/api/v1/namespaces', { metadata: { name: NS } })
    const ips: Record<'local' | 'remote', string> = { local: '', remote: '' }
    for (const name of ['local', 'remote'] as const) {
      const s = await K.admin('POST', `/api/v1/namespaces/${NS}/services`, {
        metadata: { name },
        spec: { ports: [{ name: 'iperf', port: IPERF_PORT }, { name: 'http', port: 80, targetPort: HTTP_PORT }, { name: 'echo', port: ECHO_PORT }] }
      })
      ips[name] = s.spec.clusterIP
      await K.admin('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, {
        metadata: { name: `${name}-1`, labels: { 'kubernetes.io/service-name': name } },
        addressType: 'IPv4',
        ports: [{ name: 'iperf', port: IPERF_PORT, protocol: 'TCP' }, { name: 'http', port: HTTP_PORT, protocol: 'TCP' }, { name: 'echo', port: ECHO_PORT, protocol: 'TCP' }],
        endpoints: [{ addresses: [pods[name].ip], conditions: { ready: true }, nodeName: `edge-${pods[name].node}` }]
      })
    }

    const exec = async (argv: string[], timeoutMs: number): Promise<string> => {
      const r = await L.exec(pods.client, argv, { timeoutMs })
      if (r.code !== 0) throw new Error(`${argv.join(' ')}: exit ${r.code} ${r.stderr.slice(-1000)}`)
      return r.stdout
    }
    const lastJson = (out: string): any => JSON.parse(out.trim().split('\n').at(-1)!)
    const url = (ip: string, port: number): string => `http://${ip}:${port}/`
    await eventually(async () => {
      const st = await K.mesh.call('a1', 'GET', '/proxy')
      const listeners = st.listeners.map((l: any) => l.service).sort()
      if (listeners.length !== 3 || listeners.some((s: string) => s !== `${NS}/remote`)) throw new Error(`a1 listeners: ${JSON.stringify(listeners)}`)
    }, 30_000, 200)
    for (const [ip, port, want] of [[pods.local.ip, HTTP_PORT, 'server-local'], [ips.local, 80, 'server-local'], [ips.remote, 80, 'server-remote']] as const) {
      await eventually(async () => {
        const r = lastJson(await exec([NODE, WORKLOAD, 'load', url(ip, port), '1', '1'], 15_000))
        if (r.counts[want] !== 1) throw new Error(`${ip}:${port} answered ${JSON.stringify(r)}`)
      }, 30_000, 250)
    }
    const path = (await K.mesh.status('a1')).peers.find((p: any) => p.node === 'edge-b1')?.path as string
    log(`ready: local ClusterIP ${ips.local}, remote ClusterIP ${ips.remote}, a1 -> b1 over ${path}`)
    const agentPids = { a1: K.mesh.agent('a1').proc.pid, b1: K.mesh.agent('b1').proc.pid }
    const rssIdleMb = await rssIdle(agentPids) // before any traffic phase (proxy-rss.ts)
    log(`agent RSS idle: a1 ${rssIdleMb.a1!.rssMb} MiB, b1 ${rssIdleMb.b1!.rssMb} MiB`)

    const pid = (host: string): number | undefined => K.mesh.agent(host).proc.pid
    const cpuSnap = async (): Promise<CpuSnap> => ({ at: performance.now(), a1: await procCpu(pid('a1')), b1: await procCpu(pid('b1')), machine: await machineCpu() })
    const rtt = (await K.mesh.call('a1', 'POST', '/ping?node=edge-b1&count=20')).rttMs as number
    const iperf = async (ip: string, seconds = SECONDS): Promise<Iperf> => {
      const out = await exec(['iperf3', '-c', ip, '-p', String(IPERF_PORT), '-t', String(seconds), '-J'], (seconds + 60) * 1000)
      const j = JSON.parse(out)
      if (j.error != null) throw new Error(`iperf3 to ${ip}: ${j.error}`)
      return { mbps: j.end.sum_received.bits_per_second / 1e6, bytes: j.end.sum_received.bytes, senderCpu: j.end.cpu_utilization_percent?.host_total, receiverCpu: j.end.cpu_utilization_percent?.remote_total }
    }
    const raw = async (bytes: number): Promise<{ mbps: number, bytes: number, path: string }> => {
      const chunk = 64 * 1024
      return await K.mesh.call('a1', 'POST', `/diag/transfer?node=edge-b1&direction=discard&bytes=${Math.max(chunk, Math.round(bytes / chunk) * chunk)}`, 300_000)
    }

    // ---- throughput: direct, ClusterIP local, ClusterIP remote, raw tunnel, in rounds ----
    type Key = 'direct' | 'local' | 'remote' | 'raw'
    const tput: Record<Key, number[]> = { direct: [], local: [], remote: [], raw: [] }
    // CPU while each remote / raw run went: the agents (% of one core) and the whole machine
    const cpu: Record<'remote' | 'raw', CpuUse[]> = { remote: [], raw: [] }
    const bytes: Record<'remote' | 'raw', number[]> = { remote: [], raw: [] }
    const fmtCpu = (c: CpuUse): string => `agents a1 ${c.a1.toFixed(0)}% (sys ${c.a1Sys.toFixed(0)}) b1 ${c.b1.toFixed(0)}% (sys ${c.b1Sys.toFixed(0)}), machine ${c.machinePct.toFixed(0)}% busy`
    await endPhase('setup')
    // odd rounds run direct, local, remote, raw; even rounds the reverse (order effects cancel);
    // the raw transfer carries the volume of the latest remote run
    let volume = 0
    const settle = async (): Promise<void> => { await sleep(500) }
    for (let round = 0; round <= ROUNDS; round++) {
      const warm = round === 0
      const secs = warm ? 2 : SECONDS
      log(warm ? 'throughput warm-up round' : `throughput round ${round}/${ROUNDS}`)
      let d: Iperf | undefined; let l: Iperf | undefined; let rm: Iperf | undefined; let tr: { mbps: number, bytes: number, path: string } | undefined
      let cpuRemote: CpuUse | undefined; let cpuRaw: CpuUse | undefined
      const steps: Record<Key, () => Promise<void>> = {
        direct: async () => { d = await iperf(pods.local.ip, secs) },
        local: async () => { l = await iperf(ips.local, secs) },
        remote: async () => { const c0 = await cpuSnap(); rm = await iperf(ips.remote, secs); cpuRemote = cpuUse(c0, await cpuSnap()); volume = rm.bytes },
        raw: async () => { const c0 = await cpuSnap(); tr = await raw(volume); cpuRaw = cpuUse(c0, await cpuSnap()) }
      }
      const order: Key[] = round % 2 === 1 || warm ? ['direct', 'local', 'remote', 'raw'] : ['raw', 'remote', 'local', 'direct']
      for (const key of order) { await steps[key](); await settle() }
      if (d == null || l == null || rm == null || tr == null || cpuRemote == null || cpuRaw == null) throw new Error('unreachable')
      if (tr.path !== path) log(`note: the raw transfer ran over ${tr.path}`)
      log(`  direct ${d.mbps.toFixed(0)} Mbit/s, ClusterIP local ${l.mbps.toFixed(0)}, ClusterIP remote ${rm.mbps.toFixed(0)} (${fmtCpu(cpuRemote)}), raw tunnel ${tr.mbps.toFixed(0)} (${fmtCpu(cpuRaw)}), ${(tr.bytes / 2 ** 20).toFixed(0)} MiB`)
      if (warm) continue
      tput.direct.push(d.mbps); tput.local.push(l.mbps); tput.remote.push(rm.mbps); tput.raw.push(tr.mbps)
      cpu.remote.push(cpuRemote); cpu.raw.push(cpuRaw)
      bytes.remote.push(rm.bytes); bytes.raw.push(tr.bytes)
    }

    await endPhase('throughput')
    // the agents' resident memory after carrying the traffic (the young generation's size shows here)
    const rssMiB = async (host: string): Promise<number> => r1(metricValue(await K.mesh.agentMetrics(host), 'process_resident_memory_bytes') / 2 ** 20)
    const agentRss = { a1: await rssMiB('a1'), b1: await rssMiB('b1') }
    log(`agent RSS after the throughput phase: a1 ${agentRss.a1} MiB, b1 ${agentRss.b1} MiB`)

    // ---- connect latency: a new connection per request ----
    const lat: Record<'direct' | 'local' | 'remote', Latency[]> = { direct: [], local: [], remote: [] }
    const targets = { direct: url(pods.local.ip, HTTP_PORT), local: url(ips.local, 80), remote: url(ips.remote, 80) }
    const latency = async (u: string, n: number): Promise<Latency> => {
      const r = lastJson(await exec([NODE, WORKLOAD, 'latency', u, String(n)], 120_000)) as Latency
      if (r.errors > 0) throw new Error(`latency ${u}: ${r.errors} of ${n} requests failed`)
      return r
    }
    log('connect latency warm-up')
    for (const u of Object.values(targets)) await latency(u, 50)
    for (let round = 1; round <= ROUNDS; round++) {
      for (const key of ['direct', 'local', 'remote'] as const) lat[key].push(await latency(targets[key], REQUESTS))
      log(`latency round ${round}/${ROUNDS}: p50 direct ${lat.direct.at(-1)!.p50} ms, ClusterIP local ${lat.local.at(-1)!.p50}, ClusterIP remote ${lat.remote.at(-1)!.p50}`)
    }

    await endPhase('latency')

    // ---- 1,000 concurrent connections to the remote Service ----
    log(`${CONNS} concurrent connections to ${ips.remote}:${ECHO_PORT} (tunnel)`)
    const failedBefore = metricValue(await K.mesh.agentMetrics('a1'), 'edgemesh_proxy_connections_total', 'result="failed"')
    const conns = lastJson(await exec([NODE, WORKLOAD, 'conns', ips.remote, String(ECHO_PORT), String(CONNS)], 120_000)) as Conns
    const failedAfter = metricValue(await K.mesh.agentMetrics('a1'), 'edgemesh_proxy_connections_total', 'result="failed"')
    log(`  ${JSON.stringify(conns)}; a1 counted ${failedAfter - failedBefore} failed proxy connections`)

    await endPhase('concurrency')
    foreign.stop()
    const rssAfter = await rssAfterTraffic(agentPids, rssIdleMb) // the traffic phases are over: back near idle within 60 s?
    log(`agent RSS after the traffic: ${rssRow(rssAfter)[2]}`)
    log('programming: 20 Services one by one, each polled from client (a1) from its write, endpoint server-remote (b1)')
    const programming = await measureProgramming({ lab: L, k: K, client: pods.client, server: pods.remote, port: HTTP_PORT, expect: 'server-remote', namespace: NS, log })
    const restart = await measureRestartGap(L, K, { host: 'b1', client: pods.client, url: url(ips.remote, 80), log })

    // ---- results ----
    const m = {
      direct: median(tput.direct), local: median(tput.local), remote: median(tput.remote), raw: median(tput.raw),
      latDirect: median(lat.direct.map((x) => x.p50)), latLocal: median(lat.local.map((x) => x.p50)), latRemote: median(lat.remote.map((x) => x.p50))
    }
    const ratios = {
      local: m.local / m.direct,
      remote: m.remote / m.raw,
      connectLocal: m.latLocal / m.latDirect,
      connectRemote: m.latRemote / m.latDirect,
      sync: ipt.sync_ms / ipt.restore_ms
    }
    const met = {
      local: ratios.local >= 0.9,
      remote: ratios.remote >= 0.9,
      connectLocal: ratios.connectLocal <= 1.5,
      conns: conns.ok === CONNS,
      sync: ratios.sync <= 1.5
    }
    const mark = (ok: boolean): string => ok ? 'met' : 'NOT MET'
    const cpuMed = (xs: CpuUse[]): string => `a1 ${median(xs.map((x) => x.a1)).toFixed(0)}% b1 ${median(xs.map((x) => x.b1)).toFixed(0)}%`
    // machine CPU seconds per GiB moved (all processes and the kernel): what each path costs
    const perGib = (k: 'remote' | 'raw'): number => cpu[k].reduce((a, c) => a + c.machineBusyS, 0) / (bytes[k].reduce((a, b) => a + b, 0) / 2 ** 30)
    const agentPerGib = (k: 'remote' | 'raw'): number => cpu[k].reduce((a, c) => a + c.agentsS, 0) / (bytes[k].reduce((a, b) => a + b, 0) / 2 ** 30)
    const samples = (xs: number[], d = 0): string => xs.map((x) => x.toFixed(d)).join(' ')

    process.stdout.write(`\nClusterIP proxy benchmark: lab sites a and b (cone NATs), a1 -> b1 over ${path}; iperf3 ${SECONDS} s per run, ${ROUNDS} alternating rounds after a warm-up, medians; ` +
      `${REQUESTS} new connections per latency run; ${SERVICES} Services x 3 endpoints for iptables (${ipt.backend}, ${ipt.chains} chains, ${ipt.rules} rules, ${(ipt.bytes / 2 ** 20).toFixed(1)} MiB), ${SYNC_ROUNDS} rounds; ` +
      `${cpus().length} cores shared by every process, ${background.toFixed(0)}% busy before the bench began; ${Math.round((Date.now() - t0) / 1000)} s in all\n\n`)
    process.stdout.write(renderTable(['measure', 'value', 'samples', 'compared with', 'ratio', 'target'], [
      ['direct_local_mbps (pod IP, same node)', m.direct.toFixed(0), samples(tput.direct), '-', '-', '-'],
      ['clusterip_local_mbps (kernel DNAT)', m.local.toFixed(0), samples(tput.local), 'direct_local', `${ratios.local.toFixed(2)}x`, `>= 0.9x: ${mark(met.local)}`],
      ['tunnel_raw_mbps (/diag/transfer discard)', m.raw.toFixed(0), samples(tput.raw), '-', '-', `(agents ${cpuMed(cpu.raw)} of a core)`],
      ['clusterip_remote_mbps (DNAT -> agent -> tunnel)', m.remote.toFixed(0), samples(tput.remote), 'tunnel_raw', `${ratios.remote.toFixed(2)}x`, `>= 0.9x: ${mark(met.remote)} (agents ${cpuMed(cpu.remote)} of a core)`],
      ['connect_p50_ms_direct', m.latDirect.toFixed(3), samples(lat.direct.map((x) => x.p50), 3), '-', '-', '-'],
      ['connect_p50_ms_local (kernel DNAT)', m.latLocal.toFixed(3), samples(lat.local.map((x) => x.p50), 3), 'direct', `${ratios.connectLocal.toFixed(2)}x`, `<= 1.5x: ${mark(met.connectLocal)}`],
      ['connect_p50_ms_remote (tunnel)', m.latRemote.toFixed(3), samples(lat.remote.map((x) => x.p50), 3), 'direct', `${ratios.connectRemote.toFixed(2)}x`, '-'],
      ['concurrent_conns_ok (remote ClusterIP)', `${conns.ok} / ${CONNS}`, `all echoed in ${conns.allMs.toFixed(0)} ms`, '-', '-', `all: ${mark(met.conns)}`],
      ['iptables_restore_10k_ms (restore alone)', ipt.restore_ms.toFixed(0), samples(ipt.samples.restore), '-', '-', '-'],
      ['iptables_sync_10k_ms (agent full sync)', ipt.sync_ms.toFixed(0), samples(ipt.samples.sync), 'restore alone', `${ratios.sync.toFixed(2)}x`, `<= 1.5x: ${mark(met.sync)}`],
      ['restart_gap_ms (b1 SIGTERM -> first new success, minus start-up)', String(restart.restart_gap_ms), `SIGTERM -> ok ${restart.restart_signal_to_ok_ms} ms, start-up ${restart.restart_startup_ms} ms`, '-', '-', `<= ${RESTART_GAP_TARGET_MS}: ${mark(restart.restart_gap_ms <= RESTART_GAP_TARGET_MS)}`],
      rssRow(rssAfter),
      ['programming_p99_ms (Service written -> first success, other node)', String(programming.programming_p99_ms), `p50 ${programming.programming_p50_ms}; dns_visible_p50_ms ${programming.dns_visible_p50_ms}`, 'dns_visible_p50', `+${programming.programming_p99_ms - programming.dns_visible_p50_ms} ms`, `<= 500 and <= floor + 300: ${mark(programming.targets.p99_500 && programming.targets.p99_floor_300)}`]
    ]) + '\n\n')
    process.stdout.write(`CPU per GiB moved (sums over the rounds): machine ${perGib('remote').toFixed(2)} s through the proxy vs ${perGib('raw').toFixed(2)} s raw tunnel (${(perGib('remote') / perGib('raw')).toFixed(2)}x); ` +
      `the two agents ${agentPerGib('remote').toFixed(2)} s vs ${agentPerGib('raw').toFixed(2)} s (${(agentPerGib('remote') / agentPerGib('raw')).toFixed(2)}x); machine busy ${median(cpu.remote.map((c) => c.machinePct)).toFixed(0)}% (proxy) / ${median(cpu.raw.map((c) => c.machinePct)).toFixed(0)}% (raw) of all cores\n`)
    process.stdout.write(`foreign CPU (processes outside this benchmark) per phase, % of the machine: ${Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}` +
      `${Math.max(phases.iptables!, phases.throughput!, phases.latency!, phases.concurrency!) > 5 ? ' -- WARNING: other work shared the machine; ratios from those phases are skewed' : ''}\n`)
    process.stdout.write(`tunnel echo RTT a1 -> b1 (min of 20): ${rtt.toFixed(3)} ms; `)
    process.stdout.write(`latency p90 ms: direct ${median(lat.direct.map((x) => x.p90))}, local ${median(lat.local.map((x) => x.p90))}, remote ${median(lat.remote.map((x) => x.p90))}; concurrent connect p50/p99 ${conns.connectP50Ms}/${conns.connectP99Ms} ms, errors ${JSON.stringify(conns.errors)}\n`)
    process.stdout.write(`sync stages (${SERVICES} Services, medians, measured apart): plan ${ipt.plan_ms} ms, rule text ${ipt.build_ms} ms, hook listing ${ipt.list_hooks_ms} ms; restore inside the sync ${ipt.sync_restore_ms} ms (${ipt.samples.sync_restore.join(' ')}); ` +
      `first sync at start (empty table) ${ipt.first_sync?.ms} ms, its restore ${ipt.first_sync?.restoreMs} ms\n\n`)
    const result = {
      direct_local_mbps: r1(m.direct),
      clusterip_local_mbps: r1(m.local),
      tunnel_raw_mbps: r1(m.raw),
      clusterip_remote_mbps: r1(m.remote),
      connect_p50_ms_direct: r3(m.latDirect),
      connect_p50_ms_local: r3(m.latLocal),
      connect_p50_ms_remote: r3(m.latRemote),
      concurrent_conns_ok: conns.ok,
      concurrent_conns_total: CONNS,
      iptables_restore_10k_ms: r1(ipt.restore_ms),
      iptables_sync_10k_ms: r1(ipt.sync_ms),
      local_ratio: r2(ratios.local),
      remote_ratio: r2(ratios.remote),
      connect_local_ratio: r2(ratios.connectLocal),
      connect_remote_ratio: r2(ratios.connectRemote),
      sync_ratio: r2(ratios.sync),
      targets_met: Object.values(met).filter(Boolean).length,
      targets_total: Object.values(met).length,
      tunnel_path: path,
      tunnel_rtt_ms: r3(rtt),
      background_busy_pct: Math.round(background),
      foreign_busy_pct: r1(Math.max(phases.iptables!, phases.throughput!, phases.latency!, phases.concurrency!)),
      cpu_s_per_gib_remote: r2(perGib('remote')),
      cpu_s_per_gib_raw: r2(perGib('raw')),
      agent_rss_mib_a1: agentRss.a1,
      agent_rss_mib_b1: agentRss.b1,
      ...rssFields(rssAfter),
      ...restart,
      programming_p50_ms: programming.programming_p50_ms,
      programming_p99_ms: programming.programming_p99_ms,
      dns_visible_p50_ms: programming.dns_visible_p50_ms
    }
    process.stdout.write(JSON.stringify(result) + '\n')
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await cleanup()
  }
}

await main()
