// A name resolves only when it can be reached (issue 11, part 3), in the NAT lab against the
// real apiserver with the default proxy settings: 10 Services created one by one, each with its
// endpoint pod on one site and polled from a pod on the other site from before its API write
// (resolve through the node-local DNS, connect, retry every 5 ms). Every SYN a pod sends to the
// Service CIDR that leaves its node untranslated reaches the site router, where an iptables
// counter sees it: none may, and every Service must answer. The counter is shown to count.
// Prints created -> name resolved and created -> first success per Service.
import { randomInt } from 'node:crypto'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab, type LabPod, type LabSite } from '../lab/lab.ts'
import { startK8sMesh, type K8sMesh } from '../lab/k8s-mesh.ts'

const ROOT = join(import.meta.dirname, '../..')
const WORKLOAD = join(ROOT, 'test/lab/workload.mjs')
const POLLER = join(ROOT, 'test/lab/first-success.mjs')
const PROBE = join(ROOT, 'test/lab/refusal-probe.mjs')
const NODE = process.execPath
const NS = 'prog'
const DNS = '169.254.96.16'
const SERVICE_CIDR = '10.96.0.0/16' // the harness's --service-cluster-ip-range
const SYN_TAG = 'edgemesh-test-untranslated-syn'
const SERVICES = 10

let lab: Lab
let k: K8sMesh
const pods: Record<'aClient' | 'bClient' | 'aWeb' | 'bWeb', LabPod> = {} as any

/** Counts (and lets through) TCP SYNs from the site's LAN to the Service CIDR: each is one that left its node untranslated. */
async function countUntranslatedSyns (site: LabSite): Promise<void> {
  const r = await lab.exec(site.router, ['iptables', '-t', 'raw', '-I', 'PREROUTING', '1', '-i', 'lan0', '-p', 'tcp', '--syn', '-d', SERVICE_CIDR, '-m', 'comment', '--comment', SYN_TAG])
  expect(r.code, r.stderr).toBe(0)
}

async function untranslatedSyns (site: LabSite): Promise<number> {
  const r = await lab.exec(site.router, ['iptables-save', '-c', '-t', 'raw'])
  expect(r.code).toBe(0)
  const lines = r.stdout.split('\n').filter((l) => l.includes(SYN_TAG))
  expect(lines).toHaveLength(1)
  return Number(/^\[(\d+):/.exec(lines[0]!)?.[1] ?? NaN)
}

const epochNow = (): number => performance.timeOrigin + performance.now()

beforeAll(async () => {
  lab = await createLab({ prefix: `emq${randomInt(36 ** 3).toString(36).padStart(3, '0')}-`, sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }] })
  pods.aClient = await lab.addPod('a1')
  pods.aWeb = await lab.addPod('a1')
  pods.bClient = await lab.addPod('b1')
  pods.bWeb = await lab.addPod('b1')
  await Promise.all([
    lab.spawn(pods.aWeb, [NODE, WORKLOAD, 'http', 'a-web', '8080']).waitForLine(/listening/, 10_000),
    lab.spawn(pods.bWeb, [NODE, WORKLOAD, 'http', 'b-web', '8080']).waitForLine(/listening/, 10_000)
  ])
  for (const site of lab.sites) await countUntranslatedSyns(site)
  // the defaults (minSyncIntervalMs 250): what a user runs
  k = await startK8sMesh(lab, { agents: ['a1', 'b1'], agentConfig: () => ({ dns: {}, proxy: {} }) })
  await k.admin('POST', '/api/v1/namespaces', { metadata: { name: NS } })
  // the tunnel is up both ways before the clock starts: what is measured is programming, not the first dial
  expect((await k.mesh.ping('a1', 'b1')).path).toBe('direct-udp')
  expect((await k.mesh.ping('b1', 'a1')).path).toBe('direct-udp')
}, 240_000)

afterAll(async () => {
  await k?.stop()
  await lab?.teardown()
})

interface Polled { name: string, from: string, resolvedMs: number, okMs: number, attempts: number, outcomes: Record<string, number> }

/** Creates Service `name` (then its EndpointSlice: `web`) while a poller in `client` tries it; times from the Service write's return. */
async function createAndPoll (name: string, web: LabPod, webName: string, client: LabPod): Promise<Polled> {
  const poller = lab.spawn(client, [NODE, POLLER, DNS, `${name}.${NS}.svc.cluster.local`, '80', webName, '20000', '5'])
  await poller.waitForLine(/^polling$/, 10_000)
  await k.admin('POST', `/api/v1/namespaces/${NS}/services`, { metadata: { name }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } })
  const created = epochNow()
  await k.admin('POST', `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, {
    metadata: { name: `${name}-1`, labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: [web.ip], conditions: { ready: true }, nodeName: `edge-${web.node}` }]
  })
  const code = await poller.exited
  const out = JSON.parse(poller.stdout().trim().split('\n').at(-1)!)
  expect(code, `${name}: ${poller.stdout()} ${poller.stderr()}`).toBe(0)
  return { name, from: client.node, resolvedMs: Math.round(out.resolvedAt - created), okMs: Math.round(out.okAt - created), attempts: out.attempts, outcomes: out.outcomes }
}

describe('a new Service is programmed before its name resolves', () => {
  it('10 Services created one by one, each polled from another site from its API write: no SYN leaves a site untranslated, every Service answers', async () => {
    // one Service each way first, not timed: the first connection through a new direction pays for cold code paths
    await createAndPoll('warm-a', pods.bWeb, 'b-web', pods.aClient)
    await createAndPoll('warm-b', pods.aWeb, 'a-web', pods.bClient)
    const results: Polled[] = []
    for (let i = 0; i < SERVICES; i++) {
      // even: endpoint on site b, client on site a; odd: the other way round
      const [web, webName, client] = i % 2 === 0 ? [pods.bWeb, 'b-web', pods.aClient] : [pods.aWeb, 'a-web', pods.bClient]
      results.push(await createAndPoll(`svc-${i}`, web, webName, client))
    }
    for (const r of results) console.log(`[programming] ${r.name} polled from ${r.from}: created -> name resolved ${r.resolvedMs} ms, -> first success ${r.okMs} ms (${r.attempts} connection attempts, failed: ${JSON.stringify(r.outcomes)})`)
    const oks = results.map((r) => r.okMs).sort((x, y) => x - y)
    console.log(`[programming] created -> first success: min ${oks[0]} ms, median ${oks[Math.floor(oks.length / 2)]} ms, max ${oks.at(-1)} ms`)
    const syns = { a: await untranslatedSyns(lab.site('a')), b: await untranslatedSyns(lab.site('b')) }
    console.log(`[programming] SYNs to ${SERVICE_CIDR} that left a site untranslated: ${JSON.stringify(syns)}`)
    expect(syns).toEqual({ a: 0, b: 0 })
    // the counter counts: a SYN to a ClusterIP nobody programmed leaves the node untranslated
    const probe = await lab.exec(pods.aClient, [NODE, PROBE, 'tcp', '10.96.255.250', '80', '1500'], { timeoutMs: 15_000 })
    expect(JSON.parse(probe.stdout.trim()).result).toBe('timeout')
    expect(await untranslatedSyns(lab.site('a'))).toBeGreaterThanOrEqual(1)
  }, 240_000)
})
