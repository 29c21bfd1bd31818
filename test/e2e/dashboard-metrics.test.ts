// Every metric the Grafana dashboard shows exists in the real /metrics: every PromQL expression
// of manifests/helm/edgemesh/dashboards/edgemesh.json is parsed for metric names, and each must be
// a family (a `# TYPE` line; a histogram's _bucket/_sum/_count count as its family) on the relay's
// or, for agent panels, an agent's /metrics scraped over HTTP as Prometheus would. A real relay
// and two agents behind a cone and a symmetric NAT (a relayed UDP path) run with DNS, the proxy
// and a real apiserver; a pod's curl by Service name and a held connection make the labelled
// series exist, and the labels the panels group by are on them.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab, type LabPod, type LabProcess } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import { metricValue } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'

const ROOT = join(import.meta.dirname, '../..')
const DASHBOARD = JSON.parse(readFileSync(join(ROOT, 'manifests/helm/edgemesh/dashboards/edgemesh.json'), 'utf8'))
const WORKLOAD = join(ROOT, 'test/lab/workload.mjs')
const NODE = process.execPath
const NS = 'shop'
const METRICS_PORT = 9091

/** PromQL words that are not metric names */
const PROMQL_WORDS = new Set(['sum', 'max', 'min', 'avg', 'count', 'rate', 'irate', 'increase', 'delta', 'deriv', 'histogram_quantile', 'topk', 'bottomk',
  'time', 'abs', 'clamp_min', 'clamp_max', 'max_over_time', 'min_over_time', 'avg_over_time', 'by', 'without', 'or', 'and', 'unless', 'on', 'ignoring',
  'group_left', 'group_right', 'offset', 'bool', 'vector', 'scalar', 'inf', 'nan'])

/** Metric names in a PromQL expression: strings, label matchers, ranges and grouping removed first. */
function metricNames (expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  const names = new Set<string>()
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    if (!PROMQL_WORDS.has(m[0].toLowerCase())) names.add(m[0])
  }
  return [...names]
}

/** Labels a panel groups by (`by (a, b)`), without the ones Prometheus adds at scrape time. */
function groupLabels (expr: string): string[] {
  const out = new Set<string>()
  for (const m of expr.matchAll(/\bby\s*\(([^)]*)\)/g)) for (const l of m[1]!.split(',').map((s) => s.trim())) if (l !== '') out.add(l)
  for (const l of ['node', 'pod', 'namespace', 'instance', 'job', 'le']) out.delete(l)
  return [...out]
}

interface Family { type: string, labels: Set<string>, samples: number }

/** The families of a Prometheus text exposition: type, label names seen on samples, sample count. */
function families (text: string): Map<string, Family> {
  const out = new Map<string, Family>()
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (t != null) { out.set(t[1]!, { type: t[2]!, labels: new Set(), samples: 0 }); continue }
    if (line === '' || line.startsWith('#')) continue
    const s = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? /.exec(line)
    if (s == null) continue
    const fam = out.get(s[1]!) ?? out.get(s[1]!.replace(/_(bucket|sum|count)$/, ''))
    if (fam == null) continue
    fam.samples++
    for (const l of (s[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) fam.labels.add(l[1]!)
  }
  return out
}

/** The family a name in an expression refers to (a histogram's _bucket/_sum/_count: the histogram). */
function familyOf (fams: Map<string, Family>, name: string): Family | undefined {
  const direct = fams.get(name)
  if (direct != null) return direct
  const base = name.replace(/_(bucket|sum|count)$/, '')
  const f = base !== name ? fams.get(base) : undefined
  return f != null && (f.type === 'histogram' || f.type === 'summary') ? f : undefined
}

interface Query { panel: string, expr: string, agent: boolean }
const queries: Query[] = DASHBOARD.panels.filter((p: any) => p.type !== 'row').flatMap((p: any) =>
  p.targets.map((t: any) => ({ panel: p.title as string, expr: t.expr as string, agent: (t.expr as string).includes('node=~"$node"') })))

let lab: Lab
let k: K8sMesh
const pods: Record<string, LabPod> = {}
let holder: LabProcess | undefined

const scrapeAgent = async (host: string): Promise<string> => {
  const r = await lab.exec(host, [NODE, '-e', `fetch("http://127.0.0.1:${METRICS_PORT}/metrics").then(r=>r.text()).then(t=>process.stdout.write(t))`])
  if (r.code !== 0) throw new Error(`scrape ${host}: ${r.stderr}`)
  return r.stdout
}

beforeAll(async () => {
  // b behind a symmetric NAT: no punched path to a, so the tunnel runs over the blind relay
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'symmetric' }] })
  const resolvConf = `search ${NS}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 169.254.96.16\noptions ndots:5\n`
  pods.client = await lab.addPod('a1', { resolvConf })
  pods.web = await lab.addPod('b1', { resolvConf })
  const web = lab.spawn(pods.web, [NODE, WORKLOAD, 'http', 'web', '8080'])
  const echo = lab.spawn(pods.web, [NODE, WORKLOAD, 'tcp-echo', '7070'])
  await Promise.all([web.waitForLine(/listening/, 10_000), echo.waitForLine(/listening/, 10_000)])
  k = await startK8sMesh(lab, {
    agents: ['a1', 'b1'],
    agentConfig: () => ({ metrics: `0.0.0.0:${METRICS_PORT}`, dns: {}, proxy: { minSyncIntervalMs: 100 } })
  })
  await k.admin('POST', '/api/v1/namespaces', { metadata: { name: NS } })
  for (const [name, port] of [['web', 8080], ['echo', 7070]] as const) {
    await k.admin('POST', `/api/v1/namespaces/${NS}/services`, { metadata: { name, namespace: NS }, spec: { ports: [{ name: 'p', port: name === 'web' ? 80 : port, targetPort: port }] } })
    await k.admin('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, {
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
      metadata: { name: `${name}-1`, namespace: NS, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4', ports: [{ name: 'p', port, protocol: 'TCP' }],
      endpoints: [{ addresses: [pods.web.ip], conditions: { ready: true }, nodeName: 'edge-b1' }]
    })
  }
  // a name lookup (DNS) and a proxied connection through the tunnel
  await eventually(async () => {
    const r = await lab.exec(pods.client!, ['curl', '-sS', '--max-time', '5', `http://web.${NS}.svc.cluster.local/`], { timeoutMs: 10_000 })
    expect(r.stdout.trim()).toBe('web')
  }, 60_000, 500)
  // one connection held open through the agent's listener
  holder = lab.spawn(pods.client, [NODE, '-e', `require('net').connect(7070, 'echo.${NS}.svc.cluster.local').on('connect', () => console.log('connected'))`])
  await holder.waitForLine(/connected/, 20_000)
}, 240_000)

afterAll(async () => {
  try { await holder?.kill(); await k?.stop() } finally { await lab?.teardown() }
})

describe('the dashboard against the real /metrics', () => {
  it('parses metric names out of every panel query', () => {
    expect(queries.length).toBeGreaterThan(30)
    expect(metricNames('histogram_quantile(0.99, sum by (le, kind) (rate(edgemesh_proxy_sync_duration_ms_bucket{node=~"$node", x="a b"}[$__rate_interval])))')).toEqual(['edgemesh_proxy_sync_duration_ms_bucket'])
    expect(metricNames('sum(a_total{p="1"}) / sum without (x) (b) or vector(0)')).toEqual(['a_total', 'b'])
    for (const q of queries) expect(metricNames(q.expr).length, `${q.panel}: ${q.expr}`).toBeGreaterThan(0)
  })

  it('every metric on the dashboard is a family in /metrics, and the labels its panels group by are on its samples', async () => {
    // the relayed path is up and measured, so its series exist
    await eventually(async () => {
      const a = await scrapeAgent('a1')
      expect(metricValue(a, 'edgemesh_tunnel_peers', 'path="relay-udp"')).toBe(1)
      expect(a).toMatch(/edgemesh_tunnel_rtt_ms\{peer="edge-b1",path="relay-udp"\} \d/)
      expect(metricValue(a, 'edgemesh_proxy_open_connections')).toBe(1)
    }, 60_000, 500)
    const relayText = await k.mesh.relayMetrics()
    const agentText = await scrapeAgent('a1')
    const relay = families(relayText)
    const agent = families(agentText)
    const missing: string[] = []
    const ungrouped: string[] = []
    for (const q of queries) {
      for (const name of metricNames(q.expr)) {
        const fam = familyOf(agent, name) ?? (q.agent ? undefined : familyOf(relay, name))
        if (fam == null) { missing.push(`${name} (${q.panel}${q.agent ? ', agent' : ''})`); continue }
        // a family with samples must carry the labels the panel splits by
        if (fam.samples > 0) for (const l of groupLabels(q.expr)) if (!fam.labels.has(l)) ungrouped.push(`${name} has no label ${l} (${q.panel})`)
      }
    }
    expect(missing).toEqual([])
    expect(ungrouped).toEqual([])

    // the values behind the panels the issue names
    expect(metricValue(relayText, 'edgemesh_registered_agents')).toBe(2)
    expect(metricValue(relayText, 'edgemesh_blind_relay_sessions')).toBeGreaterThanOrEqual(1)
    expect(metricValue(relayText, 'edgemesh_blind_relay_bytes_total')).toBeGreaterThan(0)
    expect(relayText).toContain('# TYPE edgemesh_circuit_relay_circuits gauge')
    expect(agentText).toMatch(/edgemesh_relay_rtt_ms\{relay="198\.51\.100\.10"\} \d/)
    expect(metricValue(agentText, 'edgemesh_dns_queries_total', 'result="cluster"')).toBeGreaterThanOrEqual(1)
    expect(metricValue(agentText, 'edgemesh_proxy_connections_total', 'result="ok"')).toBeGreaterThanOrEqual(2)
    expect(metricValue(agentText, 'edgemesh_proxy_sync_duration_ms_count')).toBeGreaterThanOrEqual(1)
    expect(metricValue(agentText, 'edgemesh_catalog_serving_from_disk')).toBe(0)
    for (const resource of ['services', 'endpointSlices', 'peers']) expect(agentText).toContain(`edgemesh_catalog_lag_seconds{resource="${resource}"} 0`)
  })

  it('the held connection leaves the open-connections gauge when it closes', async () => {
    await holder?.kill()
    holder = undefined
    await eventually(async () => { expect(metricValue(await scrapeAgent('a1'), 'edgemesh_proxy_open_connections')).toBe(0) }, 20_000, 250)
  })
})
