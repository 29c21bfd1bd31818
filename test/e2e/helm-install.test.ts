// Installed the way users install it: the image built from manifests/Dockerfile and the Helm
// chart from the repository, on real kubelets behind the lab's NATs (a public node for the
// relay, one edge node behind a cone NAT, one behind a symmetric NAT), from `helm install` to
// `helm uninstall`. The apiserver cannot reach the kubelets (that is the edge): what pods print
// is read through each node's own container runtime (crictl), never kubectl exec/logs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { eventually } from '../lab/wait.ts'
import { startCluster, type Cluster, type ClusterNode } from '../cluster/cluster.ts'
import {
  AGENT_SELECTOR, CHART_DIR, MESH_NAMESPACE as NS, SERVER_SELECTOR, agentStatus, answersAfter, clientLines, createClient, createWeb,
  failureWindows, helm as helmOn, isReady, meshLeftovers, pods as podsOn, waitReady as waitReadyOn
} from '../cluster/mesh-release.ts'
import { ensureImage } from '../image/image.ts'

const RELEASE = 'em'
const RELAY_IP = '198.51.100.10' // relay0: the public node
const CLIENT_LOG_EVERY_MS = 200
/** one agent's replacement: pod deleted, new pod scheduled and started, catalog synced, rules in (measured 1-3.5 s) */
const MAX_ROLL_GAP_MS = 10_000

let lab: Lab
let cluster: Cluster
let imageRef: string
const timings: Record<string, number> = {}
let pub: ClusterNode, cone: ClusterNode, sym: ClusterNode

const helm = async (args: string[]): Promise<{ code: number, out: string }> => await helmOn(cluster, args)
const pods = async (ns: string, selector?: string): Promise<any[]> => await podsOn(cluster, ns, selector)
const waitReady = async (ns: string, selector: string, count: number, timeoutMs: number): Promise<any[]> => await waitReadyOn(cluster, ns, selector, count, timeoutMs)

beforeAll(async () => {
  const t0 = Date.now()
  const image = await ensureImage()
  imageRef = image.ref
  timings.image_build_ms = image.cached ? 0 : image.buildMs
  timings.image_size_mb = Math.round(image.sizeBytes / 1e5) / 10
  lab = await createLab({ sites: [{ name: 'a', nat: 'cone', hosts: 1 }, { name: 'b', nat: 'symmetric', hosts: 1 }] }, { onSignalTeardown: true })
  const t1 = Date.now()
  cluster = await startCluster(lab, { nodes: [{ host: 'relay0', role: 'public' }, { host: 'a1', role: 'edge' }, { host: 'b1', role: 'edge' }] })
  timings.cluster_cold_start_ms = Date.now() - t1
  pub = cluster.nodes.find((n) => n.host.name === 'relay0')!
  cone = cluster.nodes.find((n) => n.host.name === 'a1')!
  sym = cluster.nodes.find((n) => n.host.name === 'b1')!
  const t2 = Date.now()
  await cluster.importImage(image.archive, image.ref)
  timings.image_import_ms = Date.now() - t2
  timings.setup_total_ms = Date.now() - t0
}, 900_000)

afterAll(async () => {
  console.log(`[helm-install] timings ${JSON.stringify(timings)}`)
  // the lab goes even when the cluster's stop reports leftovers (the failure still shows)
  try { await cluster?.stop() } finally { await lab?.teardown() }
}, 180_000)

describe('helm install on real kubelets behind NATs', () => {
  it('one command with only the relay address: relay and both edge agents Ready, peer records from projected tokens', async () => {
    const t0 = Date.now()
    const r = await helm(['install', RELEASE, CHART_DIR, '-n', NS, '--create-namespace', '--set', `relay.announce[0]=${RELAY_IP}`])
    expect(r.code, r.out).toBe(0)
    const relay = await waitReady(NS, SERVER_SELECTOR, 1, 240_000)
    expect(relay[0].spec.nodeName).toBe(pub.name)
    const agents = await waitReady(NS, AGENT_SELECTOR, 3, 240_000)
    timings.install_to_ready_ms = Date.now() - t0
    expect(agents.map((p) => p.spec.nodeName).sort()).toEqual(cluster.nodes.map((n) => n.name).sort())
    // the agents' tokens are the ones the kubelet projected into the pods (bound to pod + node)
    for (const p of agents) {
      const vols = p.spec.volumes.filter((v: any) => v.projected?.sources?.some((s: any) => s.serviceAccountToken != null))
      expect(vols.length, p.metadata.name).toBe(1)
    }
    // each agent published its peer record (a Lease named after its node) with its own peer id
    for (const node of cluster.nodes) {
      const st = await eventually(async () => await agentStatus(cluster, node), 60_000, 1000)
      const lease = await eventually(async () => await cluster.admin('GET', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${node.name}`), 60_000, 1000)
      expect(JSON.stringify(lease)).toContain(st.peerId)
    }
  })

  it('a pod on the cone node calls web.shop.svc.cluster.local, served only by a pod on the symmetric node: 200 over the relayed path', async () => {
    await cluster.admin('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } })
    await createWeb(cluster, 'shop', sym, imageRef)
    await waitReady('shop', 'app=web', 1, 120_000)
    const since = Date.now()
    // the client resolves the name through the resolver the kubelet gave it (clusterDNS: the agent's node-local DNS)
    await createClient(cluster, 'shop', cone, imageRef, 'http://web.shop.svc.cluster.local/', CLIENT_LOG_EVERY_MS)
    const ok = await answersAfter(cone, 'shop', since, 10, 120_000)
    expect(ok.every((l) => l.status === 200 && l.body === `web on ${sym.name}`)).toBe(true)
    const st = await agentStatus(cluster, cone)
    const peer = st.peers.find((p: any) => p.node === sym.name)
    expect(peer?.path).toMatch(/^relay-/) // the symmetric NAT allows no punched path
    const resolv = await cone.containerExec('client', ['cat', '/etc/resolv.conf'], { namespace: 'shop' })
    expect(resolv.stdout).toContain('nameserver 169.254.96.16')
    // kube-proxy runs on the node too and has a rule for the same ClusterIP (to a pod IP this node
    // cannot route to): the mesh's hooks come first in nat PREROUTING and OUTPUT
    const nat = (await cone.exec(['iptables-save', '-t', 'nat'])).stdout.split('\n')
    for (const hook of ['PREROUTING', 'OUTPUT']) {
      const jumps = nat.filter((l) => l.startsWith(`-A ${hook} `))
      expect(jumps[0], hook).toMatch(/-j EDGEMESH-/)
      expect(jumps.some((l) => l.includes('-j KUBE-SERVICES')), hook).toBe(true)
    }
  })

  it('the Service answers again after the relay pod is deleted and rescheduled (same relay identity)', async () => {
    const [relay] = await pods(NS, SERVER_SELECTOR)
    await cluster.admin('DELETE', `/api/v1/namespaces/${NS}/pods/${relay.metadata.name}`)
    const [next] = await eventually(async () => {
      const ps = (await pods(NS, SERVER_SELECTOR)).filter((p) => p.metadata.uid !== relay.metadata.uid && isReady(p))
      if (ps.length !== 1) throw new Error('new relay pod not Ready yet')
      return ps
    }, 180_000, 500)
    expect(next.spec.nodeName).toBe(pub.name)
    const since = Date.now()
    await answersAfter(cone, 'shop', since, 10, 120_000)
    const peer = (await agentStatus(cluster, cone)).peers.find((p: any) => p.node === sym.name)
    expect(peer?.path).toMatch(/^relay-/)
  })

  // An agent is its node's DNS and Service proxy, and the serving node's agent is the endpoint's
  // only way in: while either of those two restarts, requests time out. The roll must never
  // take more than one node's agent at a time, and each gap must stay short.
  it('helm upgrade with a changed value rolls the agents one node at a time; the Service answers throughout but for the restart of an agent on its path', async () => {
    const before = await pods(NS, AGENT_SELECTOR)
    const oldUids = new Set(before.map((p) => p.metadata.uid))
    const leasesBefore = (await cluster.admin('GET', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`)).items.map((l: any) => l.metadata.name).sort()
    const since = Date.now()
    const r = await helm(['upgrade', RELEASE, CHART_DIR, '-n', NS, '--reuse-values', '--set', 'agent.logLevel=debug'])
    expect(r.code, r.out).toBe(0)
    // sample the agents until all three are new and Ready: never more than one node without a Ready agent
    let maxUnready = 0
    await eventually(async () => {
      const ps = await pods(NS, AGENT_SELECTOR)
      const readyNodes = new Set(ps.filter(isReady).map((p) => p.spec.nodeName))
      maxUnready = Math.max(maxUnready, cluster.nodes.length - readyNodes.size)
      const fresh = ps.filter((p) => !oldUids.has(p.metadata.uid) && isReady(p))
      if (fresh.length !== 3) throw new Error(`${fresh.length}/3 agents rolled`)
    }, 300_000, 250)
    expect(maxUnready).toBeLessThanOrEqual(1)
    const lines = (await clientLines(cone, 'shop')).filter((l) => l.t > since)
    const windows = failureWindows(lines)
    timings.upgrade_requests = lines.length
    timings.upgrade_failed_requests = lines.filter((l) => !l.ok).length
    console.log(`[helm-install] upgrade: ${lines.length} requests, failures ${JSON.stringify(windows)}`)
    expect(windows.length, JSON.stringify(windows)).toBeLessThanOrEqual(2) // the client's node, the serving node
    for (const w of windows) expect(w.toMs - w.fromMs, JSON.stringify(w)).toBeLessThan(MAX_ROLL_GAP_MS)
    await answersAfter(cone, 'shop', Date.now(), 10, 120_000)
    // peer records were kept through the roll (same nodes, same Lease objects)
    const leasesAfter = (await cluster.admin('GET', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`)).items.map((l: any) => l.metadata.name).sort()
    expect(leasesAfter).toEqual(leasesBefore)
  })

  it('helm test passes', async () => {
    const r = await helm(['test', RELEASE, '-n', NS, '--timeout', '3m'])
    expect(r.code, r.out).toBe(0)
    // every test pod of the chart ran and succeeded (a suite that never started is not listed at all)
    for (const suite of ['agent', 'dns', 'relay']) {
      expect(r.out).toMatch(new RegExp(`TEST SUITE:\\s+${RELEASE}-edgemesh-test-${suite}\\n.*\\n.*\\nPhase:\\s+Succeeded\\n`))
    }
    expect(r.out).not.toMatch(/Phase:\s+Failed/)
  })

  it('the schema rejects a typo\'d key and a wrong type, naming the field', async () => {
    const typo = await helm(['template', RELEASE, CHART_DIR, '--set', `relay.announce[0]=${RELAY_IP}`, '--set', 'agent.dns.enabeld=true'])
    expect(typo.code).not.toBe(0)
    // the schema's own words (the output also echoes the command line, which names the key too)
    expect(typo.out).toMatch(/at '\/agent\/dns': additional properties 'enabeld' not allowed/)
    const wrong = await helm(['template', RELEASE, CHART_DIR, '--set', `relay.announce[0]=${RELAY_IP}`, '--set-string', 'agent.listen.udpPort=abc'])
    expect(wrong.code).not.toBe(0)
    expect(wrong.out).toMatch(/at '\/agent\/listen\/udpPort': got string, want integer/)
  })

  it('helm uninstall leaves no chain, rule, device or address of the mesh on any node', async () => {
    const r = await helm(['uninstall', RELEASE, '-n', NS, '--wait', '--timeout', '3m'])
    expect(r.code, r.out).toBe(0)
    for (const node of cluster.nodes) {
      await eventually(async () => {
        const ps = await node.crictl(['ps', '-q', '--name', '^(agent|server)$'])
        if (ps.code !== 0) throw new Error(`crictl ps on ${node.name}: ${ps.stderr}`) // an empty answer must mean none
        if (ps.stdout.trim() !== '') throw new Error(`mesh containers still running on ${node.name}`)
      }, 120_000, 500)
      expect(await meshLeftovers(node), node.name).toEqual([])
    }
  })
})
