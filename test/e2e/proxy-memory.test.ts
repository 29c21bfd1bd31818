// Memory comes back after traffic (issue 11 part 4): in the NAT lab with the real apiserver, a
// client pod on site a moves 1 GiB through a ClusterIP whose endpoint is behind site b's NAT
// (the tunnel, direct-udp): bulk downloads and uploads plus rate-limited and stalling slow
// readers, all at once. Both agents' RSS (the client side a1, the endpoint side b1) is measured
// once start-up has settled (idle), sampled during the traffic (peak), and then polled until it
// is back within 20 MiB of idle: it must get there within 60 s. Where the memory sits at the
// end (V8 heap, glibc's brk heap, other mappings) is printed. EDGEMESH_MEM_AGENT_ENV (JSON)
// overrides the agents' environment, e.g. '{"GLIBC_TUNABLES":"glibc.malloc.mmap_threshold=65536"}'.
import { createHash, randomBytes, randomInt } from 'node:crypto'
import { rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab, type LabPod } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import { metricValue } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'
import { anonMappings, fmtMem, memBackUnder, memSample, peakMem, settledMem, type MemSample } from '../lab/rss.ts'

const ROOT = join(import.meta.dirname, '../..')
const WORKLOAD = join(ROOT, 'test/lab/workload.mjs')
const NODE = process.execPath
const NS = 'mem'
const FILE_PORT = 8090
const BLOB_BYTES = 64 * 2 ** 20
/** what "returns" means: within this many MiB of the idle figure ... */
const SLACK_MB = 20
/** ... within this long after the traffic ended */
const RETURN_MS = 60_000

let lab: Lab
let k: K8sMesh
let client: LabPod
let server: LabPod
let clusterIp = ''
const blobFile = join(tmpdir(), `edgemesh-mem-blob-${process.pid}.bin`)
let blobSha = ''

beforeAll(async () => {
  // a lab prefix of its own ("emm" + 3 random base36 chars): its namespaces are easy to tell apart
  lab = await createLab({ prefix: `emm${randomInt(36 ** 3).toString(36).padStart(3, '0')}-`, sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }] })
  client = await lab.addPod('a1')
  server = await lab.addPod('b1')
  const blob = randomBytes(BLOB_BYTES)
  writeFileSync(blobFile, blob)
  blobSha = createHash('sha256').update(blob).digest('hex')
  await lab.spawn(server, [NODE, WORKLOAD, 'file', String(FILE_PORT), blobFile]).waitForLine(/listening/, 10_000)
  k = await startK8sMesh(lab, { agents: ['a1', 'b1'], diagnostics: true, agentConfig: () => ({ proxy: {} }), ...(process.env.EDGEMESH_MEM_AGENT_ENV != null ? { agentEnv: JSON.parse(process.env.EDGEMESH_MEM_AGENT_ENV) } : {}) })
  await k.admin('POST', '/api/v1/namespaces', { metadata: { name: NS } })
  const s = await k.admin('POST', `/api/v1/namespaces/${NS}/services`, { metadata: { name: 'blob' }, spec: { ports: [{ name: 'http', port: 80, targetPort: FILE_PORT }] } })
  clusterIp = s.spec.clusterIP
  await k.admin('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, {
    metadata: { name: 'blob-1', labels: { 'kubernetes.io/service-name': 'blob' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: FILE_PORT, protocol: 'TCP' }],
    endpoints: [{ addresses: [server.ip], conditions: { ready: true }, nodeName: 'edge-b1' }]
  })
  // programmed and reachable: the tunnel to b1 is up (a connection the idle agent keeps anyway)
  await eventually(async () => {
    const r = await lab.exec(client, ['curl', '-sS', '--max-time', '5', '-I', `http://${clusterIp}/`], { timeoutMs: 10_000 })
    if (r.code !== 0) throw new Error(`HEAD ${clusterIp}: exit ${r.code} ${r.stderr}`)
  }, 30_000, 250)
}, 180_000)

afterAll(async () => {
  await k?.stop()
  await lab?.teardown()
  rmSync(blobFile, { force: true })
})

describe('agent memory after traffic through the ClusterIP proxy (lab + real apiserver)', () => {
  it('after 1 GiB of bulk and slow-reader traffic across NATs, both agents\' RSS is back within 20 MiB of idle within 60 s', async () => {
    expect((await k.mesh.status('a1')).peers.find((p: any) => p.node === 'edge-b1')?.path).toBe('direct-udp')
    const hosts = ['a1', 'b1'] as const
    const pid = (h: string): number => k.mesh.agent(h).proc.pid
    const idle: Record<string, MemSample> = {}
    for (const h of hosts) idle[h] = await settledMem(pid(h))
    const heap = async (h: string): Promise<string> => {
      const m = await k.mesh.agentMetrics(h)
      const v = (name: string, labels = ''): string => (metricValue(m, name, labels) / 2 ** 20).toFixed(1)
      return `V8 heap ${v('nodejs_heap_size_used_bytes')} used / ${v('nodejs_heap_size_total_bytes')} total (new space ${v('nodejs_heap_space_size_total_bytes', 'space="new"')}), external ${v('nodejs_external_memory_bytes')} MiB`
    }
    for (const h of hosts) console.log(`[memory] ${h} idle: ${fmtMem(idle[h])}; ${await heap(h)}`)
    const peaks = hosts.map((h) => peakMem(pid(h)))
    const failures = async (): Promise<number> => (await Promise.all(hosts.map(async (h) => metricValue(await k.mesh.agentMetrics(h), 'edgemesh_proxy_stream_failures_total')))).reduce((a, b) => a + b, 0)
    const failedBefore = await failures()

    // 16 x 64 MiB = 1 GiB at once: 4 bulk downloads, 4 bulk uploads, 4 rate-limited downloads
    // (two of them stalling for 2 s after 16 MiB), 4 uploads to an endpoint reading at 10-20 MiB/s
    const url = `http://${clusterIp}/`
    const stall = '{ dd bs=1M count=16 iflag=fullblock status=none; sleep 2; cat; }'
    const download = async (limit: string, stalls: boolean): Promise<string> => {
      const r = await lab.exec(client, ['bash', '-o', 'pipefail', '-c', `curl -sS --max-time 150 ${limit !== '' ? `--limit-rate ${limit}` : ''} ${url} | ${stalls ? stall : 'cat'} | sha256sum`], { timeoutMs: 160_000 })
      return `${r.code} ${r.stdout.split(' ')[0]} ${r.stderr}`.trim()
    }
    const upload = async (rate: number): Promise<string> => {
      const r = await lab.exec(client, ['curl', '-sS', '--max-time', '150', '-T', blobFile, `${url}?rate=${rate}`], { timeoutMs: 160_000 })
      return `${r.code} ${r.stdout.trim()} ${r.stderr}`.trim()
    }
    const t0 = performance.now()
    const results = await Promise.all([
      ...[0, 1, 2, 3].map(async (i) => await download('', false)),
      ...[0, 1, 2, 3].map(async (i) => await upload(1e12)),
      ...['10M', '20M', '10M', '20M'].map(async (rate, i) => await download(rate, i < 2)),
      ...[10, 20, 10, 20].map(async (mb, i) => await upload(mb * 2 ** 20))
    ])
    const trafficS = (performance.now() - t0) / 1000
    const peak = await Promise.all(peaks.map(async (p) => await p.stop()))
    for (const [i, r] of results.entries()) {
      if (i < 4 || (i >= 8 && i < 12)) expect(r, `download ${i}`).toBe(`0 ${blobSha}`)
      else expect(r, `upload ${i}`).toBe(`0 ${blobSha} ${BLOB_BYTES}`)
    }
    expect(await failures()).toBe(failedBefore)

    for (const h of hosts) console.log(`[memory] ${h} right after the traffic: ${fmtMem(await memSample(pid(h)))}; ${await heap(h)}`)
    const back = await Promise.all(hosts.map(async (h) => await memBackUnder(pid(h), idle[h]!.rssMb + SLACK_MB, RETURN_MS)))
    for (const [i, h] of hosts.entries()) {
      const maps = await anonMappings(pid(h))
      console.log(`[memory] ${h} at the end: ${await heap(h)}; glibc brk heap ${maps.brkHeapMb} MiB, other anonymous mappings ${maps.otherAnonMb} MiB (${maps.mappings})`)
      console.log(`[memory] ${h}: idle ${fmtMem(idle[h])}, peak ${fmtMem(peak[i])}, after ${fmtMem(back[i]!.sample)} ${back[i]!.ok ? `${(back[i]!.ms / 1000).toFixed(1)} s after the traffic` : `(lowest in ${RETURN_MS / 1000} s)`}; 1 GiB in ${trafficS.toFixed(1)} s`)
    }
    for (const [i, h] of hosts.entries()) expect(back[i]!.sample.rssMb, `${h} RSS ${RETURN_MS / 1000} s after the traffic (idle ${idle[h]!.rssMb} MiB)`).toBeLessThanOrEqual(idle[h]!.rssMb + SLACK_MB)
  }, 240_000)
})
