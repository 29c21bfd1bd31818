// The chart's observability objects, rendered with the real helm: the Grafana dashboard ConfigMap
// (dashboards.enabled) holds dashboards/edgemesh.json byte for byte under the sidecar's label, and
// the Prometheus Operator monitors (metrics.serviceMonitor.enabled) select the relay's Service and
// the agents' pods on ports that exist. Both are off by default; monitors without agent metrics
// fail the render naming the value to set. The dashboard is a Grafana 10+ import: a Prometheus
// datasource variable, every panel on it, no overlapping panels.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { CHART_DIR, renderChart, type KubeObject } from '../controlplane/cluster.ts'

const DASHBOARD_FILE = join(CHART_DIR, 'dashboards/edgemesh.json')
const dashboardText = readFileSync(DASHBOARD_FILE, 'utf8')
const dashboard = JSON.parse(dashboardText)
const ON = ['--set', 'dashboards.enabled=true', '--set', 'metrics.serviceMonitor.enabled=true', '--set', 'agent.metrics.enabled=true']
const find = (objs: KubeObject[], kind: string): KubeObject[] => objs.filter((o) => o.kind === kind)
const subset = (sel: Record<string, string>, labels: Record<string, string> | undefined): boolean =>
  Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => labels?.[k] === v)

describe('chart: dashboard and monitors', () => {
  it('renders neither by default', async () => {
    const objs = await renderChart({ releaseName: 'mesh' })
    expect(objs.filter((o) => o.kind === 'ServiceMonitor' || o.kind === 'PodMonitor')).toEqual([])
    expect(objs.filter((o) => o.kind === 'ConfigMap' && o.metadata?.name?.endsWith('-dashboard'))).toEqual([])
  })

  it('the dashboard ConfigMap holds dashboards/edgemesh.json unchanged, with the sidecar label', async () => {
    const objs = await renderChart({ releaseName: 'mesh', args: ['--set', 'dashboards.enabled=true'] })
    const [cm, ...more] = find(objs, 'ConfigMap').filter((o) => o.metadata?.name === 'mesh-edgemesh-dashboard')
    expect(more).toEqual([])
    expect(cm!.metadata!.namespace).toBe('edgemesh')
    expect(cm!.metadata!.labels).toMatchObject({ grafana_dashboard: '1', 'app.kubernetes.io/instance': 'mesh', 'app.kubernetes.io/component': 'dashboard' })
    expect(Object.keys(cm!.data)).toEqual(['edgemesh.json'])
    expect(cm!.data['edgemesh.json']).toBe(dashboardText.trimEnd())
    expect(JSON.parse(cm!.data['edgemesh.json'])).toEqual(dashboard)
    // no monitors unless asked for
    expect(objs.filter((o) => o.kind === 'ServiceMonitor' || o.kind === 'PodMonitor')).toEqual([])
  })

  it('the dashboard ConfigMap goes where the sidecar looks: namespace, labels and annotations are settable', async () => {
    const objs = await renderChart({
      releaseName: 'mesh',
      args: ['--set', 'dashboards.enabled=true', '--set', 'dashboards.namespace=monitoring', '--set', 'dashboards.labels.grafana_dashboard=null',
        '--set', 'dashboards.labels.dashboards=edge', '--set', 'dashboards.annotations.grafana_folder=edgemesh']
    })
    const cm = objs.find((o) => o.metadata?.name === 'mesh-edgemesh-dashboard')!
    expect(cm.metadata!.namespace).toBe('monitoring')
    expect(cm.metadata!.labels).toMatchObject({ dashboards: 'edge' })
    expect(cm.metadata!.labels!.grafana_dashboard).toBeUndefined()
    expect(cm.metadata!.annotations).toEqual({ grafana_folder: 'edgemesh' })
  })

  it('the ServiceMonitor scrapes the relay Service\'s http port, the PodMonitor the agents\' metrics port, labelled by node', async () => {
    const objs = await renderChart({ releaseName: 'mesh', args: [...ON, '--set', 'metrics.serviceMonitor.labels.release=kps', '--set', 'metrics.serviceMonitor.interval=15s', '--set', 'metrics.serviceMonitor.scrapeTimeout=10s'] })
    const [sm, ...moreSm] = find(objs, 'ServiceMonitor')
    const [pm, ...morePm] = find(objs, 'PodMonitor')
    expect([moreSm, morePm]).toEqual([[], []])
    for (const m of [sm!, pm!]) {
      expect(m.apiVersion).toBe('monitoring.coreos.com/v1')
      expect(m.metadata!.namespace).toBe('edgemesh')
      expect(m.metadata!.labels!.release).toBe('kps')
      expect(m.spec.namespaceSelector).toEqual({ matchNames: ['edgemesh'] })
    }
    // the relay's Service, and only it
    const services = find(objs, 'Service').filter((s) => subset(sm!.spec.selector.matchLabels, s.metadata!.labels))
    expect(services.map((s) => s.metadata!.name)).toEqual(['mesh-edgemesh-server'])
    const [ep] = sm!.spec.endpoints
    expect(ep).toEqual({ port: 'http', path: '/metrics', interval: '15s', scrapeTimeout: '10s' })
    const httpPort = services[0]!.spec.ports.find((p: any) => p.name === 'http')
    expect(httpPort.port).toBe(9090)
    // the agents' pods, on the container port named metrics
    const ds = find(objs, 'DaemonSet').filter((d) => subset(pm!.spec.selector.matchLabels, d.spec.template.metadata.labels))
    expect(ds.map((d) => d.metadata!.name)).toEqual(['mesh-edgemesh-agent'])
    expect(find(objs, 'Deployment').filter((d) => subset(pm!.spec.selector.matchLabels, d.spec.template.metadata.labels))).toEqual([])
    const ports = ds[0]!.spec.template.spec.containers.flatMap((c: any) => c.ports ?? [])
    expect(ports.find((p: any) => p.name === 'metrics')?.containerPort).toBe(9091)
    const [pep] = pm!.spec.podMetricsEndpoints
    expect(pep).toMatchObject({ port: 'metrics', path: '/metrics', interval: '15s', scrapeTimeout: '10s' })
    expect(pep.relabelings).toEqual([{ sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' }])
  })

  it('monitors without agent metrics fail the render naming agent.metrics.enabled; relay-only releases need none', async () => {
    await expect(renderChart({ args: ['--set', 'metrics.serviceMonitor.enabled=true'] })).rejects.toThrow(/metrics\.serviceMonitor\.enabled: the agents serve no \/metrics; set agent\.metrics\.enabled=true/)
    await expect(renderChart({ args: [...ON, '--set', 'server.service.enabled=false'] })).rejects.toThrow(/set server\.service\.enabled=true/)
    const relayOnly = await renderChart({ args: ['--set', 'metrics.serviceMonitor.enabled=true', '--set', 'agent.enabled=false'] })
    expect(relayOnly.filter((o) => o.kind === 'ServiceMonitor' || o.kind === 'PodMonitor').map((o) => o.kind)).toEqual(['ServiceMonitor'])
  })

  it('the schema rejects a typo and a wrong type in the new keys, naming them', async () => {
    await expect(renderChart({ args: ['--set', 'metrics.serviceMonitor.enabeld=true'] })).rejects.toThrow(/\/metrics\/serviceMonitor.*'enabeld' not allowed/)
    await expect(renderChart({ args: ['--set', 'dashboards.enabled=yes'] })).rejects.toThrow(/\/dashboards\/enabled.*want boolean/)
    await expect(renderChart({ args: ['--set', 'metrics.serviceMonitor.interval=often'] })).rejects.toThrow(/\/metrics\/serviceMonitor\/interval/)
  })
})

describe('the dashboard JSON', () => {
  const panels: any[] = dashboard.panels
  const queryPanels = panels.filter((p) => p.type !== 'row')

  it('is a Grafana 10+ dashboard on a Prometheus datasource variable', () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(38)
    expect(dashboard.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/)
    const vars = dashboard.templating.list
    expect(vars[0]).toMatchObject({ name: 'datasource', type: 'datasource', query: 'prometheus' })
    expect(vars.map((v: any) => v.name)).toEqual(['datasource', 'namespace', 'node'])
    for (const v of vars.slice(1)) expect(v.datasource).toEqual({ type: 'prometheus', uid: '${datasource}' })
    for (const p of queryPanels) {
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' })
      expect(p.targets.length, p.title).toBeGreaterThan(0)
      for (const t of p.targets) expect(t.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' })
    }
  })

  it('has unique panel ids and no overlapping panels, within 24 columns', () => {
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length)
    for (const [i, a] of panels.entries()) {
      expect(a.gridPos.x + a.gridPos.w, a.title).toBeLessThanOrEqual(24)
      for (const b of panels.slice(i + 1)) {
        const overlap = a.gridPos.x < b.gridPos.x + b.gridPos.w && b.gridPos.x < a.gridPos.x + a.gridPos.w &&
          a.gridPos.y < b.gridPos.y + b.gridPos.h && b.gridPos.y < a.gridPos.y + a.gridPos.h
        expect(overlap, `${a.title} / ${b.title}`).toBe(false)
      }
    }
  })

  it('covers what issue 13 asks for: tunnel paths and RTTs, relay load, DNS, proxy, catalog source and lag', () => {
    const exprs = queryPanels.flatMap((p) => p.targets.map((t: any) => t.expr as string)).join('\n')
    for (const m of ['edgemesh_tunnel_peers', 'edgemesh_tunnel_rtt_ms', 'edgemesh_relay_rtt_ms', 'edgemesh_registered_agents', 'edgemesh_blind_relay_sessions',
      'edgemesh_circuit_relay_circuits', 'edgemesh_blind_relay_bytes_total', 'edgemesh_relay_refusals_total', 'edgemesh_dns_queries_total',
      'edgemesh_proxy_open_connections', 'edgemesh_proxy_connections_total', 'edgemesh_proxy_stream_failures_total', 'edgemesh_proxy_sync_duration_ms_bucket',
      'edgemesh_catalog_serving_from_disk', 'edgemesh_catalog_lag_seconds']) expect(exprs).toContain(m)
  })
})
