// bench:proxy's programming measure (issue 11, part 3): how soon a new Service answers a client
// on another node, next to its floor, the name first resolving on the client's node. For each of
// `services` Services, one by one: a poller in the client pod (test/lab/first-success.mjs:
// resolve through the node-local DNS, connect, GET, retry every 5 ms) starts, the Service is
// written, then its EndpointSlice (one endpoint: the server pod on another node); times count
// from the moment the Service write returned. Services are created `gapMs` apart after the
// previous one answered, and deleted at the end.
//   programming_p50_ms / programming_p99_ms  Service written -> first successful request
//   dns_visible_p50_ms                       Service written -> its name resolves on the client's node
// Targets: programming_p99_ms <= 500 and <= dns_visible_p50_ms + 300. The agents need dns and proxy on.
import { join } from 'node:path'
import type { Lab, LabPod } from '../lab/lab.ts'
import type { K8sMesh } from '../lab/k8s-mesh.ts'

const POLLER = join(import.meta.dirname, '../lab/first-success.mjs')
const NODE = process.execPath

export interface ProgrammingOptions {
  lab: Lab
  k: K8sMesh
  /** where the poller runs */
  client: LabPod
  /** the endpoint: a pod on another node answering `expect` over HTTP on `port` */
  server: LabPod
  port: number
  expect: string
  /** namespace the Services go in (must exist) */
  namespace: string
  services?: number
  gapMs?: number
  /** the node-local DNS address */
  dns?: string
  log?: (s: string) => void
}

export interface ProgrammingResult {
  programming_p50_ms: number
  programming_p99_ms: number
  dns_visible_p50_ms: number
  /** per Service, in creation order */
  samples: { programming: number[], dnsVisible: number[], failedAttempts: number[] }
  targets: { p99_500: boolean, p99_floor_300: boolean }
}

const quantile = (xs: number[], q: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * q))]! }
const epochNow = (): number => performance.timeOrigin + performance.now()

export async function measureProgramming (o: ProgrammingOptions): Promise<ProgrammingResult> {
  const n = o.services ?? 20
  const gapMs = o.gapMs ?? 300
  const log = o.log ?? (() => {})
  const samples: ProgrammingResult['samples'] = { programming: [], dnsVisible: [], failedAttempts: [] }
  const names: string[] = []
  try {
    for (let i = 0; i < n; i++) {
      const name = `prog-${i}`
      names.push(name)
      const poller = o.lab.spawn(o.client, [NODE, POLLER, o.dns ?? '169.254.96.16', `${name}.${o.namespace}.svc.cluster.local`, String(80), o.expect, '20000', '5'])
      await poller.waitForLine(/^polling$/, 10_000)
      await o.k.admin('POST', `/api/v1/namespaces/${o.namespace}/services`, { metadata: { name }, spec: { ports: [{ name: 'http', port: 80, targetPort: o.port }] } })
      const written = epochNow()
      await o.k.admin('POST', `/apis/discovery.k8s.io/v1/namespaces/${o.namespace}/endpointslices`, {
        metadata: { name: `${name}-1`, labels: { 'kubernetes.io/service-name': name } },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: o.port, protocol: 'TCP' }],
        endpoints: [{ addresses: [o.server.ip], conditions: { ready: true }, nodeName: `edge-${o.server.node}` }]
      })
      const code = await poller.exited
      const out = JSON.parse(poller.stdout().trim().split('\n').at(-1) ?? '{}')
      if (code !== 0 || out.okAt == null) throw new Error(`${name}: no successful request within 20 s: ${poller.stdout()} ${poller.stderr()}`)
      const failed = Object.values(out.outcomes as Record<string, number>).reduce((a, b) => a + b, 0)
      samples.programming.push(Math.round(out.okAt - written))
      samples.dnsVisible.push(Math.round(out.resolvedAt - written))
      samples.failedAttempts.push(failed)
      log(`  ${name}: name resolved ${samples.dnsVisible.at(-1)} ms, first success ${samples.programming.at(-1)} ms after the Service write (${failed} failed attempts: ${JSON.stringify(out.outcomes)})`)
      await new Promise((resolve) => setTimeout(resolve, gapMs))
    }
  } finally {
    for (const name of names) {
      await o.k.admin('DELETE', `/api/v1/namespaces/${o.namespace}/services/${name}`).catch(() => {})
      await o.k.admin('DELETE', `/apis/discovery.k8s.io/v1/namespaces/${o.namespace}/endpointslices/${name}-1`).catch(() => {})
    }
  }
  const p99 = quantile(samples.programming, 0.99)
  const dnsP50 = quantile(samples.dnsVisible, 0.5)
  return {
    programming_p50_ms: quantile(samples.programming, 0.5),
    programming_p99_ms: p99,
    dns_visible_p50_ms: dnsP50,
    samples,
    targets: { p99_500: p99 <= 500, p99_floor_300: p99 <= dnsP50 + 300 }
  }
}
