// npm run bench:dns — the agent's DNS server next to dnsmasq (a C server) on the same names, in
// one run, with dnsperf (from Debian) as the load generator:
//   qps_cluster          dnsperf -> the agent, Service names from the catalog (real apiserver)
//   qps_cached_external  dnsperf -> the agent, names outside the cluster, answered from the
//                        agent's upstream cache (upstream: the same dnsmasq)
//   qps_dnsmasq          dnsperf -> dnsmasq serving the same Service names from a hosts file
//   p99_ms               the agent's p99 latency for cluster names at a fixed 20k qps (dnsperf -v)
//   agent_rss_mb         the agent's RSS after the runs
// Everything listens on loopback (the agent with dns.device '' so nothing is added to the host).
// Rounds alternate agent / dnsmasq so machine noise lands on both. Last line: one JSON object.
// Env: EDGEMESH_BENCH_DNS_SERVICES (1000), EDGEMESH_BENCH_DNS_SECONDS (5 per run),
// EDGEMESH_BENCH_DNS_ROUNDS (3), EDGEMESH_BENCH_AGENT_NODE_OPTIONS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p").
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { startControlPlane, type ControlPlane } from '../controlplane/harness.ts'
import { startCatalogAgent, type CatalogAgent } from '../controlplane/catalog-agent.ts'
import { apiRequest } from '../controlplane/cluster.ts'
import { startProcess, type LabProcess } from '../lab/proc.ts'
import { renderTable } from '../../shared/table.ts'
import { sleep } from '../lab/wait.ts'
import { freePort } from '../lab/ports.ts'

const execFileP = promisify(execFile)
const num = (name: string, dflt: number): number => { const v = Number(process.env[name] ?? dflt); if (!Number.isInteger(v) || v <= 0) throw new Error(`${name}: positive integer`); return v }
const SERVICES = num('EDGEMESH_BENCH_DNS_SERVICES', 1000)
const SECONDS = num('EDGEMESH_BENCH_DNS_SECONDS', 5)
const ROUNDS = num('EDGEMESH_BENCH_DNS_ROUNDS', 3)
const NS = 'bench'
const log = (s: string): void => { process.stderr.write(`[bench] ${s}\n`) }

interface PerfResult { qps: number, lost: number, avgMs: number }

async function dnsperf (port: number, file: string, seconds: number, extra: string[] = []): Promise<PerfResult> {
  // one dnsperf thread: the other core is the server's
  const { stdout } = await execFileP('dnsperf', ['-s', '127.0.0.1', '-p', String(port), '-d', file, '-l', String(seconds), '-T', '1', '-c', '1', '-q', '256', ...extra], { maxBuffer: 256 << 20 })
  const qps = Number(/Queries per second:\s+([\d.]+)/.exec(stdout)?.[1])
  const lost = Number(/Queries lost:\s+(\d+)/.exec(stdout)?.[1])
  const avgMs = Number(/Average Latency \(s\):\s+([\d.]+)/.exec(stdout)?.[1]) * 1000
  if (!Number.isFinite(qps)) throw new Error(`dnsperf output not understood:\n${stdout.slice(-2000)}`)
  return { qps, lost, avgMs }
}

/** p50/p99 from dnsperf -v at a fixed rate. */
async function latency (port: number, file: string, qps: number, seconds: number): Promise<{ p50: number, p99: number, n: number }> {
  const { stdout } = await execFileP('dnsperf', ['-s', '127.0.0.1', '-p', String(port), '-d', file, '-l', String(seconds), '-Q', String(qps), '-v', '-T', '1'], { maxBuffer: 512 << 20 })
  const lat: number[] = []
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('> ')) continue
    const v = Number(line.slice(line.lastIndexOf(' ') + 1))
    if (Number.isFinite(v)) lat.push(v * 1000)
  }
  lat.sort((a, b) => a - b)
  const at = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(lat.length * p / 100))] ?? NaN
  return { p50: at(50), p99: at(99), n: lat.length }
}

async function main (): Promise<void> {
  const t0 = Date.now()
  let cp: ControlPlane | undefined
  let agent: CatalogAgent | undefined
  let dnsmasq: LabProcess | undefined
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-bench-dns-'))
  const onSignal = (): void => { void cleanup().then(() => process.exit(130)) }
  const cleanup = async (): Promise<void> => {
    await agent?.stop()
    await dnsmasq?.kill('SIGTERM')
    await cp?.stop()
    await rm(dir, { recursive: true, force: true })
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    log('starting etcd + kube-apiserver')
    cp = await startControlPlane()
    const api = cp
    const admin = async (method: string, path: string, body?: unknown): Promise<any> => {
      const r = await apiRequest(api, api.adminToken, method, path, body)
      if (r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 200)}`)
      return r.body
    }
    await admin('POST', '/api/v1/namespaces', { metadata: { name: NS } })
    await admin('POST', '/api/v1/namespaces', { metadata: { name: 'edgemesh' } })
    log(`creating ${SERVICES} Services`)
    const ips: string[] = new Array(SERVICES)
    let next = 0
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < SERVICES) {
        const i = next++
        const s = await admin('POST', `/api/v1/namespaces/${NS}/services`, { metadata: { name: `svc-${i}` }, spec: { ports: [{ name: 'http', port: 80 }] } })
        ips[i] = s.spec.clusterIP
      }
    }))

    const names = ips.map((_, i) => `svc-${i}.${NS}.svc.cluster.local`)
    const hosts = join(dir, 'hosts')
    await writeFile(hosts, names.map((n, i) => `${ips[i]!} ${n}`).join('\n') + '\n')
    const clusterFile = join(dir, 'cluster.txt')
    await writeFile(clusterFile, names.map((n) => `${n} A`).join('\n') + '\n')
    const externalFile = join(dir, 'external.txt')
    await writeFile(externalFile, Array.from({ length: SERVICES }, (_, i) => `host-${i}.example.org A`).join('\n') + '\n')

    const dnsmasqPort = await freePort()
    dnsmasq = startProcess(['dnsmasq', '--no-daemon', '--no-resolv', '--no-hosts', `--addn-hosts=${hosts}`, '--listen-address=127.0.0.1', '--bind-interfaces',
      `--port=${dnsmasqPort}`, '--address=/example.org/203.0.113.7', '--local-ttl=300', '--cache-size=10000', '--log-facility=-'])
    await dnsmasq.waitForLine(/started, version/, 10_000)

    const agentPort = await freePort()
    agent = await startCatalogAgent({
      cp: api, dir, nodeName: 'bench-node',
      extraConfig: { dns: { listen: `127.0.0.1:${agentPort}`, device: '', upstreams: [`127.0.0.1:${dnsmasqPort}`] } },
      ...(process.env.EDGEMESH_BENCH_AGENT_NODE_OPTIONS != null ? { env: { NODE_OPTIONS: process.env.EDGEMESH_BENCH_AGENT_NODE_OPTIONS } } : {})
    })
    const a = agent
    for (;;) {
      const c = await a.catalog()
      if (c.counts.services >= SERVICES) break
      await sleep(100)
    }
    // the same answers from both servers, and both warm (the agent's external names cached)
    const check = await execFileP('dig', ['@127.0.0.1', '-p', String(agentPort), '+short', names[0]!])
    const checkRef = await execFileP('dig', ['@127.0.0.1', '-p', String(dnsmasqPort), '+short', names[0]!])
    if (check.stdout.trim() !== ips[0] || checkRef.stdout.trim() !== ips[0]) throw new Error(`answers differ: agent ${check.stdout.trim()} dnsmasq ${checkRef.stdout.trim()} want ${ips[0]!}`)
    for (const [port, file] of [[agentPort, clusterFile], [agentPort, externalFile], [dnsmasqPort, clusterFile]] as const) {
      await execFileP('dnsperf', ['-s', '127.0.0.1', '-p', String(port), '-d', file, '-n', '1', '-T', '1'])
    }

    const runs: Record<'cluster' | 'external' | 'dnsmasq', PerfResult[]> = { cluster: [], external: [], dnsmasq: [] }
    for (let r = 1; r <= ROUNDS; r++) {
      runs.dnsmasq.push(await dnsperf(dnsmasqPort, clusterFile, SECONDS))
      runs.cluster.push(await dnsperf(agentPort, clusterFile, SECONDS))
      runs.external.push(await dnsperf(agentPort, externalFile, SECONDS))
      log(`round ${r}/${ROUNDS}: dnsmasq ${runs.dnsmasq.at(-1)!.qps.toFixed(0)} qps, agent cluster ${runs.cluster.at(-1)!.qps.toFixed(0)}, agent cached external ${runs.external.at(-1)!.qps.toFixed(0)}`)
    }
    const lat = await latency(agentPort, clusterFile, 20_000, 3)
    const latRef = await latency(dnsmasqPort, clusterFile, 20_000, 3)
    const status = await readFile(`/proc/${a.proc.pid}/status`, 'utf8')
    const rssMb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024

    const median = (xs: number[]): number => { const s = [...xs].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]! }
    const q = { cluster: median(runs.cluster.map((x) => x.qps)), external: median(runs.external.map((x) => x.qps)), dnsmasq: median(runs.dnsmasq.map((x) => x.qps)) }
    const ratio = q.cluster / q.dnsmasq
    const r1 = (v: number): number => Math.round(v * 10) / 10
    process.stdout.write(`\nDNS benchmark: ${SERVICES} Services in a real kube-apiserver; dnsperf (1 thread, 256 outstanding) for ${SECONDS} s per run, ${ROUNDS} alternating rounds, medians; ${Math.round((Date.now() - t0) / 1000)} s in all\n\n`)
    process.stdout.write(renderTable(['server and names', 'qps (median)', 'runs', 'lost', 'vs dnsmasq'], [
      ['dnsmasq, Service names from a hosts file', q.dnsmasq.toFixed(0), runs.dnsmasq.map((x) => x.qps.toFixed(0)).join(' '), String(runs.dnsmasq.reduce((s, x) => s + x.lost, 0)), '1.00x'],
      ['edgemesh agent, Service names (catalog)', q.cluster.toFixed(0), runs.cluster.map((x) => x.qps.toFixed(0)).join(' '), String(runs.cluster.reduce((s, x) => s + x.lost, 0)), `${ratio.toFixed(2)}x (target >= 1.0x: ${ratio >= 1 ? 'met' : 'NOT MET'})`],
      ['edgemesh agent, external names (cache)', q.external.toFixed(0), runs.external.map((x) => x.qps.toFixed(0)).join(' '), String(runs.external.reduce((s, x) => s + x.lost, 0)), `${(q.external / q.dnsmasq).toFixed(2)}x`]
    ]) + '\n\n')
    process.stdout.write(renderTable(['latency at 20k qps (dnsperf -v)', 'p50 ms', 'p99 ms', 'samples'], [
      ['edgemesh agent, Service names', lat.p50.toFixed(3), lat.p99.toFixed(3), String(lat.n)],
      ['dnsmasq, Service names', latRef.p50.toFixed(3), latRef.p99.toFixed(3), String(latRef.n)]
    ]) + `\n\nagent RSS after the runs: ${rssMb.toFixed(1)} MB\n\n`)
    process.stdout.write(JSON.stringify({ qps_cluster: Math.round(q.cluster), qps_cached_external: Math.round(q.external), qps_dnsmasq: Math.round(q.dnsmasq), p99_ms: Math.round(lat.p99 * 1000) / 1000, agent_rss_mb: r1(rssMb), cluster_vs_dnsmasq: Math.round(ratio * 100) / 100 }) + '\n')
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await cleanup()
  }
}

await main()
