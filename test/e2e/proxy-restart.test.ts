// An endpoint node's agent restarted under traffic (NAT lab + real apiserver): a client pod on
// site a requests a Service's ClusterIP every 100 ms; the Service's only endpoint is a pod on b1,
// behind another NAT (the tunnel, direct-udp). b1's agent is restarted with SIGTERM (what a
// DaemonSet rolling update does) and with SIGKILL (a crash: nothing tells the other agents, its
// paths just stop answering). Each prints the gap; new requests must succeed within 2 s of the
// new agent reporting ready (SIGTERM) and within 5 s of its start (SIGKILL).
import { randomInt } from 'node:crypto'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab, type LabPod } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'
import { metricValue } from '../lab/mesh.ts'
import { eventually } from '../lab/wait.ts'
import { describeRestart, restartUnderTraffic, type RestartReport } from '../lab/agent-restart.ts'

const ROOT = join(import.meta.dirname, '../..')
const WORKLOAD = join(ROOT, 'test/lab/workload.mjs')
const NODE = process.execPath
const NS = 'restart'

let lab: Lab
let k: K8sMesh
const pods: Record<string, LabPod> = {}
let url = ''

beforeAll(async () => {
  lab = await createLab({ prefix: `emr${randomInt(36 ** 3).toString(36).padStart(3, '0')}-`, sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }] })
  pods.client = await lab.addPod('a1')
  pods.web = await lab.addPod('b1')
  await lab.spawn(pods.web, [NODE, WORKLOAD, 'http', 'b-web', '8080']).waitForLine(/listening/, 10_000)
  k = await startK8sMesh(lab, { agents: ['a1', 'b1'], diagnostics: true, agentConfig: () => ({ proxy: { minSyncIntervalMs: 100 } }) })
  await k.admin('POST', '/api/v1/namespaces', { metadata: { name: NS } })
  const svc = await k.admin('POST', `/api/v1/namespaces/${NS}/services`, { metadata: { name: 'web', namespace: NS }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } })
  await k.admin('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { name: 'web-1', namespace: NS, labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: [pods.web.ip], conditions: { ready: true }, nodeName: 'edge-b1' }]
  })
  url = `http://${svc.spec.clusterIP}/`
  await eventually(async () => {
    const r = await lab.exec(pods.client!, ['curl', '-sS', '--max-time', '3', url], { timeoutMs: 10_000 })
    expect(r.stdout.trim()).toBe('b-web')
  }, 30_000, 200)
}, 300_000)

afterAll(async () => {
  await k?.stop()
  await lab?.teardown()
})

async function pathTo (node: string): Promise<string | undefined> {
  return (await k.mesh.status('a1')).peers.find((p: any) => p.node === node)?.path
}

function check (r: RestartReport, deadlineAt: number, what: string): void {
  console.log(`[proxy-restart] ${describeRestart(r)}`)
  // the first new request that worked answered by the deadline ...
  expect(r.firstOkAfter.e - deadlineAt, `first success after the deadline (${what})`).toBeLessThanOrEqual(0)
  // ... and none started after it failed
  const late = r.failed.filter((f) => f.s >= deadlineAt)
  expect(late.map((f) => `${f.s - deadlineAt} ms after the deadline: ${f.r}`), `requests failed after ${what}`).toEqual([])
}

describe('endpoint agent restarted under traffic (request every 100 ms from another site)', () => {
  it('SIGTERM (a rolling update): new requests succeed within 2 s of the new agent reporting ready', async () => {
    await eventually(async () => { expect(await pathTo('edge-b1')).toBe('direct-udp') }, 20_000, 200)
    const r = await restartUnderTraffic(lab, k.mesh, { host: 'b1', client: pods.client!, url, signal: 'SIGTERM' })
    check(r, r.readyAt + 2_000, 'ready + 2 s')
  }, 120_000)

  it('SIGKILL (a crash): the dead path is detected in seconds and new requests succeed within 5 s of the new agent\'s start', async () => {
    await eventually(async () => { expect(await pathTo('edge-b1')).toBe('direct-udp') }, 20_000, 200)
    const deadBefore = metricValue(await k.mesh.agentMetrics('a1'), 'edgemesh_tunnel_dead_paths_total', 'reason="silent"')
    const r = await restartUnderTraffic(lab, k.mesh, { host: 'b1', client: pods.client!, url, signal: 'SIGKILL' })
    check(r, r.spawnedAt + 5_000, 'start + 5 s')
    // a1 closed the dead path itself (liveness), long before the UDX timeout would have
    expect(metricValue(await k.mesh.agentMetrics('a1'), 'edgemesh_tunnel_dead_paths_total', 'reason="silent"')).toBeGreaterThan(deadBefore)
  }, 120_000)
})
