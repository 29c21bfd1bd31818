// The agent's catalog against a real etcd + kube-apiserver, with the agent running as its
// ServiceAccount (pod-bound token, the chart's RBAC and admission policy): create/update/delete
// propagation with latency, an apiserver restart mid-watch, 410 Gone after compaction,
// the peer registry, and a start from the disk snapshot while the API is down.
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startControlPlane, type ControlPlane } from '../controlplane/harness.ts'
import { agentToken, apiRequest, ensureNamespace, installMeshRbac } from '../controlplane/cluster.ts'
import { catalogEvents, startCatalogAgent, type CatalogAgent, type CatalogEvent } from '../controlplane/catalog-agent.ts'
import { startTcpProxy, type TcpProxy } from '../controlplane/tcp-proxy.ts'
import { CLI_BIN, metricValue } from '../lab/mesh.ts'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { eventually } from '../lab/wait.ts'

const NS = 'shop'
const execFileP = promisify(execFile)

let cp: ControlPlane
let dir: string
let proxy: TcpProxy
let agentA: CatalogAgent
let tokenA: string

const admin = async (method: string, path: string, body?: unknown, contentType?: string): Promise<any> => {
  const res = await apiRequest(cp, cp.adminToken, method, path, body, contentType)
  if (res.status < 200 || res.status > 299) throw new Error(`${method} ${path}: ${res.status} ${res.text}`)
  return res.body
}
const service = (name: string, port = 80): unknown => ({ metadata: { name, namespace: NS }, spec: { ports: [{ name: 'http', port, targetPort: 8080 }] } })
const slice = (name: string, svc: string, ips: string[], ready = true): unknown => ({
  apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
  metadata: { name, namespace: NS, labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready }, nodeName: 'node-a' }))
})
const SVC = `/api/v1/namespaces/${NS}/services`
const EPS = `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`

/** What the API holds, in the shape of the agent's /catalog?full=1 (services -> ports, endpoints -> addresses). */
async function apiTruth (): Promise<{ services: Record<string, string[]>, endpoints: Record<string, string[]> }> {
  const svcs = await admin('GET', '/api/v1/services')
  const slices = await admin('GET', '/apis/discovery.k8s.io/v1/endpointslices')
  const services: Record<string, string[]> = {}
  for (const s of svcs.items) services[`${s.metadata.namespace}/${s.metadata.name}`] = (s.spec.ports ?? []).map((p: any) => `${p.name != null && p.name !== '' ? p.name + ':' : ''}${p.port}/${p.protocol}`)
  const endpoints: Record<string, string[]> = {}
  for (const sl of slices.items) {
    const key = `${sl.metadata.namespace}/${sl.metadata.labels['kubernetes.io/service-name']}`
    for (const e of sl.endpoints ?? []) (endpoints[key] ??= []).push(`${e.addresses.join(',')}${e.conditions?.ready === false ? ' (not ready)' : ''}${e.nodeName != null ? ' @' + e.nodeName : ''}`)
  }
  for (const k of Object.keys(endpoints)) endpoints[k]!.sort()
  return { services, endpoints }
}

async function agentView (agent: CatalogAgent): Promise<{ services: Record<string, string[]>, endpoints: Record<string, string[]> }> {
  const c = await agent.catalog(true)
  return { services: Object.fromEntries(Object.entries(c.services as Record<string, any>).map(([k, v]) => [k, v.ports])), endpoints: c.endpoints }
}

async function expectConverged (agent: CatalogAgent, timeoutMs = 15_000): Promise<void> {
  await eventually(async () => {
    const [truth, view] = await Promise.all([apiTruth(), agentView(agent)])
    expect(view).toEqual(truth)
  }, timeoutMs, 200)
}

beforeAll(async () => {
  cp = await startControlPlane()
  dir = await mkdtemp(join(tmpdir(), 'edgemesh-catalog-'))
  await installMeshRbac(cp)
  await ensureNamespace(cp, NS)
  proxy = await startTcpProxy({ host: '127.0.0.1', port: cp.port })
  tokenA = await agentToken(cp, { nodeName: 'node-a' })
  agentA = await startCatalogAgent({ cp, dir, nodeName: 'node-a', token: tokenA, server: `https://127.0.0.1:${proxy.port}`, extraConfig: { logLevel: 'debug' } })
}, 120_000)

afterAll(async () => {
  await agentA?.stop()
  await proxy?.close()
  await cp?.stop()
  if (dir != null && process.env.EDGEMESH_KEEP_LOGS == null) await rm(dir, { recursive: true, force: true })
})

describe('catalog against the real apiserver', () => {
  it('reflects Service and EndpointSlice create, update and delete, and reports the latency', async () => {
    const seen: Array<{ ev: CatalogEvent, at: number }> = []
    const stream = catalogEvents(agentA.socket, (ev, at) => { seen.push({ ev, at }) })
    await stream.ready
    const latencies: Record<string, number> = {}
    const step = async (label: string, kind: string, type: string, key: string, write: () => Promise<unknown>): Promise<void> => {
      const t0 = performance.now() + performance.timeOrigin
      await write()
      const hit = await eventually(async () => {
        const h = seen.find(({ ev, at }) => at >= t0 && ev.changes.some((c) => c.kind === kind && c.type === type && c.key === key))
        if (h == null) throw new Error(`no ${kind} ${type} ${key} event yet`)
        return h
      }, 10_000, 5)
      latencies[label] = Math.round((hit.at - t0) * 10) / 10
    }
    try {
      await step('service created', 'service', 'upsert', `${NS}/web`, async () => await admin('POST', SVC, service('web')))
      expect((await agentView(agentA)).services[`${NS}/web`]).toEqual(['http:80/TCP'])
      await step('slice created', 'endpoints', 'upsert', `${NS}/web`, async () => await admin('POST', EPS, slice('web-1', 'web', ['10.1.0.5', '10.1.0.6'])))
      expect((await agentView(agentA)).endpoints[`${NS}/web`]).toEqual(['10.1.0.5 @node-a', '10.1.0.6 @node-a'])
      await step('service updated', 'service', 'upsert', `${NS}/web`, async () =>
        await admin('PATCH', `${SVC}/web`, { spec: { ports: [{ name: 'http', port: 8000, targetPort: 8080 }] } }, 'application/merge-patch+json'))
      expect((await agentView(agentA)).services[`${NS}/web`]).toEqual(['http:8000/TCP'])
      await step('slice updated', 'endpoints', 'upsert', `${NS}/web`, async () =>
        await admin('PUT', `${EPS}/web-1`, { ...(slice('web-1', 'web', ['10.1.0.7'], false) as object), metadata: { ...(await admin('GET', `${EPS}/web-1`)).metadata } }))
      expect((await agentView(agentA)).endpoints[`${NS}/web`]).toEqual(['10.1.0.7 (not ready) @node-a'])
      await step('slice deleted', 'endpoints', 'delete', `${NS}/web`, async () => await admin('DELETE', `${EPS}/web-1`))
      expect((await agentView(agentA)).endpoints[`${NS}/web`]).toBeUndefined()
      await step('service deleted', 'service', 'delete', `${NS}/web`, async () => await admin('DELETE', `${SVC}/web`))
      expect((await agentView(agentA)).services[`${NS}/web`]).toBeUndefined()
    } finally {
      stream.close()
    }
    console.log(`[catalog] write -> agent event latency (ms): ${JSON.stringify(latencies)}`)
    for (const ms of Object.values(latencies)) expect(ms).toBeLessThan(10_000)
  })

  it('converges with no stale entries when the apiserver is killed and restarted during a watch', async () => {
    for (const n of ['keep', 'gone', 'changed']) await admin('POST', SVC, service(n))
    await admin('POST', EPS, slice('gone-1', 'gone', ['10.1.1.1']))
    await expectConverged(agentA)
    await cp.stopApiserver('SIGKILL')
    await cp.startApiserver()
    // changes the agent can only learn after reconnecting (its watch died with the apiserver)
    await admin('DELETE', `${SVC}/gone`)
    await admin('DELETE', `${EPS}/gone-1`)
    await admin('PATCH', `${SVC}/changed`, { spec: { ports: [{ name: 'http', port: 9090, targetPort: 8080 }] } }, 'application/merge-patch+json')
    await admin('POST', SVC, service('new'))
    await expectConverged(agentA, 30_000)
    const view = await agentView(agentA)
    expect(view.services[`${NS}/gone`]).toBeUndefined()
    expect(view.services[`${NS}/changed`]).toEqual(['http:9090/TCP'])
    expect(view.services[`${NS}/new`]).toEqual(['http:80/TCP'])
  })

  it('relists after 410 Gone (etcd compacted while the agent was cut off) without losing or duplicating entries', async () => {
    const before = metricValue(await agentA.call('GET', '/metrics'), 'edgemesh_catalog_lists_total', 'reason="expired"')
    proxy.pause()
    for (let i = 0; i < 5; i++) await admin('POST', SVC, service(`burst-${i}`))
    await admin('POST', EPS, slice('burst-0-1', 'burst-0', ['10.1.2.1', '10.1.2.2']))
    await admin('DELETE', `${SVC}/burst-1`)
    await admin('DELETE', `${SVC}/keep`)
    await admin('PATCH', `${SVC}/burst-2`, { spec: { ports: [{ name: 'http', port: 81, targetPort: 8080 }] } }, 'application/merge-patch+json')
    const revision = await cp.compactEtcd()
    expect(revision).toBeGreaterThan(0)
    // a fresh apiserver's watch cache starts after the compacted history: old resourceVersions are 410
    await cp.stopApiserver('SIGTERM')
    await cp.startApiserver()
    proxy.resume()
    await expectConverged(agentA, 40_000)
    const metrics = await agentA.call('GET', '/metrics')
    expect(metricValue(metrics, 'edgemesh_catalog_lists_total', 'reason="expired"')).toBeGreaterThan(before)
    const summary = await agentA.catalog(true)
    const truth = await apiTruth()
    expect(summary.counts.services).toBe(Object.keys(truth.services).length)
    expect(summary.counts.endpoints).toBe(Object.values(truth.endpoints).flat().length)
  })

  it('publishes each agent\'s peer record and lets agents find each other through the registry', async () => {
    const agentB = await startCatalogAgent({ cp, dir, nodeName: 'node-b', token: await agentToken(cp, { nodeName: 'node-b' }) })
    try {
      const [idA, idB] = [(await agentA.call('GET', '/status')).peerId, (await agentB.call('GET', '/status')).peerId]
      for (const agent of [agentA, agentB]) {
        await eventually(async () => {
          const c = await agent.catalog()
          expect(c.peers.map((p: any) => [p.node, p.peerId, typeof p.writtenSecondsAgo]).sort()).toEqual([['node-a', idA, 'number'], ['node-b', idB, 'number']])
        }, 20_000, 200)
      }
      const { stdout } = await execFileP(process.execPath, [CLI_BIN, '--socket', agentA.socket, 'catalog'])
      expect(stdout).toMatch(/^catalog from Kubernetes API, version \d+: \d+ services, .*2 peers/)
      expect(stdout).toMatch(/node-b\s+12D3KooW…\S+\s+-\s+\d+ s ago/) // home relay: not published while it is the one the ranking gives (home-publication.ts)
      const lease = await admin('GET', '/apis/coordination.k8s.io/v1/namespaces/edgemesh/leases/node-b')
      expect(lease.metadata.annotations['edgemesh.io/peer-id']).toBe(idB)
      expect(lease.spec.holderIdentity).toBe(idB)
      // owned by its Node: the garbage collector deletes it with the Node
      const node = await admin('GET', '/api/v1/nodes/node-b')
      expect(lease.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Node', name: 'node-b', uid: node.metadata.uid }])
    } finally {
      await agentB.stop()
    }
  })

  it('notices a silent partition (no RST) through the watch idle timeout and catches up', async () => {
    const quietProxy = await startTcpProxy({ host: '127.0.0.1', port: cp.port })
    const agentC = await startCatalogAgent({
      cp, dir, nodeName: 'node-c', token: await agentToken(cp, { nodeName: 'node-c' }), server: `https://127.0.0.1:${quietProxy.port}`,
      extraConfig: { kubernetes: { kubeconfig: join(dir, 'node-c.kubeconfig'), namespace: 'edgemesh', snapshotFile: join(dir, 'node-c-catalog.json'), watchIdleSeconds: 3 } }
    })
    try {
      await expectConverged(agentC)
      quietProxy.blackhole()
      await admin('POST', SVC, service('during-partition'))
      await new Promise((resolve) => setTimeout(resolve, 1000))
      expect((await agentView(agentC)).services[`${NS}/during-partition`]).toBeUndefined()
      quietProxy.resume()
      const t0 = Date.now()
      await eventually(async () => { expect((await agentView(agentC)).services[`${NS}/during-partition`]).toEqual(['http:80/TCP']) }, 20_000, 100)
      console.log(`[catalog] caught up ${Date.now() - t0} ms after a silent partition healed (watch idle timeout 3 s)`)
      await expectConverged(agentC)
    } finally {
      await agentC.stop()
      await quietProxy.close()
    }
  })

  it('serves the disk snapshot when restarted while the apiserver is down, then resyncs', async () => {
    await admin('POST', SVC, service('offline'))
    await expectConverged(agentA)
    const truth = await apiTruth()
    const snapshotFile = join(dir, 'node-a-catalog.json')
    await eventually(async () => { expect(await readFile(snapshotFile, 'utf8')).toContain('"offline"') }, 10_000, 200)
    await agentA.stop()
    await cp.stopApiserver('SIGKILL')
    agentA = await startCatalogAgent({ cp, dir, nodeName: 'node-a', token: tokenA, server: `https://127.0.0.1:${proxy.port}` })
    expect(agentA.proc.stdout()).toMatch(/serving the catalog snapshot from disk/)
    const offline = await agentA.catalog()
    expect(offline.source).toBe('disk')
    expect(await agentView(agentA)).toEqual(truth)
    expect(metricValue(await agentA.call('GET', '/metrics'), 'edgemesh_catalog_serving_from_disk')).toBe(1)
    // the lag is the snapshot's age: the seconds since it was saved, at the moment of the scrape
    const savedAt = JSON.parse(await readFile(snapshotFile, 'utf8')).savedAt as number
    const before = Date.now()
    const lagText = await agentA.call('GET', '/metrics')
    const after = Date.now()
    for (const resource of ['services', 'endpointSlices', 'peers']) {
      const lag = metricValue(lagText, 'edgemesh_catalog_lag_seconds', `resource="${resource}"`)
      expect(lag, resource).toBeGreaterThanOrEqual((before - savedAt) / 1000 - 0.01)
      expect(lag, resource).toBeLessThanOrEqual((after - savedAt) / 1000 + 0.01)
    }

    await cp.startApiserver()
    await admin('POST', SVC, service('after-outage'))
    await eventually(async () => { expect((await agentA.catalog()).source).toBe('api') }, 30_000, 200)
    await expectConverged(agentA)
    expect(metricValue(await agentA.call('GET', '/metrics'), 'edgemesh_catalog_serving_from_disk')).toBe(0)
    // every watch open again: no lag
    await eventually(async () => { expect(metricValue(await agentA.call('GET', '/metrics'), 'edgemesh_catalog_lag_seconds')).toBe(0) }, 10_000, 200)
  })
})
