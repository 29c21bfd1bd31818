// Installed the way users install it: the image built from manifests/Dockerfile and the Helm
// chart from the repository, on real kubelets behind the lab's NATs (a public node for the
// relay, one edge node behind a cone NAT, one behind a symmetric NAT), from `helm install` to
// `helm uninstall`. The apiserver cannot reach the kubelets (that is the edge): what pods print
// is read through each node's own container runtime (crictl), never kubectl exec/logs.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { eventually } from '../lab/wait.ts'
import { startCluster, type Cluster, type ClusterNode } from '../cluster/cluster.ts'
import { ensureImage } from '../image/image.ts'
import { CHART_DIR } from '../controlplane/cluster.ts'
import { HELM_BIN } from '../controlplane/harness.ts'

const execFileP = promisify(execFile)
const RELEASE = 'em'
const NS = 'edgemesh'
const RELAY_IP = '198.51.100.10' // relay0: the public node
const CLIENT_LOG_EVERY_MS = 200
/** one agent's replacement: pod deleted, new pod scheduled and started, catalog synced, rules in (measured 1-3 s) */
const MAX_ROLL_GAP_MS = 10_000

let lab: Lab
let cluster: Cluster
let imageRef: string
const timings: Record<string, number> = {}
let pub: ClusterNode, cone: ClusterNode, sym: ClusterNode

async function helm (args: string[], timeoutMs = 240_000): Promise<{ code: number, out: string }> {
  try {
    const r = await execFileP(HELM_BIN, [...args, '--kubeconfig', cluster.kubeconfig], { timeout: timeoutMs, maxBuffer: 16 << 20 })
    return { code: 0, out: r.stdout + r.stderr }
  } catch (e: any) {
    return { code: typeof e.code === 'number' ? e.code : 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}` }
  }
}

async function pods (ns: string, selector?: string): Promise<any[]> {
  const q = selector == null ? '' : `?labelSelector=${encodeURIComponent(selector)}`
  return (await cluster.admin('GET', `/api/v1/namespaces/${ns}/pods${q}`)).items
}

const isReady = (p: any): boolean => p.metadata.deletionTimestamp == null &&
  (p.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True')

/** Waits until the pods matching selector are exactly `count`, all Ready; returns them. */
async function waitReady (ns: string, selector: string, count: number, timeoutMs: number): Promise<any[]> {
  return await eventually(async () => {
    const ps = await pods(ns, selector)
    const summary = ps.map((p) => `${p.metadata.name}@${p.spec.nodeName}:${p.status?.phase}${isReady(p) ? '/ready' : ''}`).join(', ')
    if (ps.length !== count || !ps.every(isReady)) throw new Error(`${selector}: want ${count} Ready, have [${summary}]`)
    return ps
  }, timeoutMs, 500)
}

/** The id of the running container `name` in the pod whose name starts with podPrefix, on node. */
async function containerId (node: ClusterNode, name: string, podPrefix?: string): Promise<string> {
  const args = ['ps', '-q', '--state', 'running', '--name', `^${name}$`]
  if (podPrefix != null) args.push('--pod', (await node.crictl(['pods', '-q', '--state', 'ready', '--name', podPrefix])).stdout.trim().split('\n')[0] ?? 'none')
  const r = await node.crictl(args)
  const id = r.stdout.trim().split('\n')[0]
  if (r.code !== 0 || id == null || id === '') throw new Error(`no running container ${name} on ${node.name}: ${r.stderr}`)
  return id
}

/** `edgemesh status --json` inside the agent container on node (crictl exec, node-local). */
async function agentStatus (node: ClusterNode): Promise<any> {
  const id = await containerId(node, 'agent')
  const r = await node.crictl(['exec', id, 'node', 'bin/edgemesh.js', 'status', '--json'])
  if (r.code !== 0) throw new Error(`edgemesh status on ${node.name}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

interface ClientLine { t: number, ok: boolean, status?: number, body?: string, err?: string }

/** The client pod's results so far (one JSON line per request on its stdout). */
async function clientLines (): Promise<ClientLine[]> {
  const id = await containerId(cone, 'client')
  const r = await cone.crictl(['logs', id])
  return (r.stdout + r.stderr).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
}

/** Waits for `n` fresh successful answers after time `since`. */
async function answersAfter (since: number, n: number, timeoutMs: number): Promise<ClientLine[]> {
  return await eventually(async () => {
    const ok = (await clientLines()).filter((l) => l.t > since && l.ok)
    if (ok.length < n) throw new Error(`${ok.length}/${n} answers since ${new Date(since).toISOString()}`)
    return ok
  }, timeoutMs, 500)
}

interface FailureWindow { fromMs: number, toMs: number, failed: number, errors: string[] }

/** Runs of consecutive failed requests, relative to the first line, with their error kinds. */
function failureWindows (lines: ClientLine[]): FailureWindow[] {
  const out: FailureWindow[] = []
  const t0 = lines[0]?.t ?? 0
  let cur: FailureWindow | undefined
  for (const l of [...lines].sort((a, b) => a.t - b.t)) {
    if (l.ok) { cur = undefined; continue }
    const err = l.err ?? `status ${l.status}`
    if (cur == null) { cur = { fromMs: l.t - t0, toMs: l.t - t0, failed: 0, errors: [] }; out.push(cur) }
    cur.toMs = l.t - t0
    cur.failed++
    if (!cur.errors.includes(err)) cur.errors.push(err)
  }
  return out
}

/** Node-level leftovers of the mesh in a node's network namespace (chains, rules, devices, addresses). */
async function meshLeftovers (node: ClusterNode): Promise<string[]> {
  const found: string[] = []
  for (const save of ['iptables-nft-save', 'iptables-legacy-save']) {
    const r = await node.exec([save])
    for (const l of r.stdout.split('\n')) if (/edgemesh/i.test(l)) found.push(`${save}: ${l}`)
  }
  const nft = await node.exec(['nft', 'list', 'ruleset'])
  for (const l of nft.stdout.split('\n')) if (/edgemesh/i.test(l)) found.push(`nft: ${l.trim()}`)
  const links = await node.exec(['ip', '-o', 'link'])
  for (const l of links.stdout.split('\n')) if (/edgemesh/i.test(l)) found.push(`link: ${l}`)
  const addrs = await node.exec(['ip', '-o', 'addr'])
  for (const l of addrs.stdout.split('\n')) if (l.includes('169.254.96.16')) found.push(`addr: ${l}`)
  return found
}

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
  await cluster?.stop()
  await lab?.teardown()
}, 180_000)

describe('helm install on real kubelets behind NATs', () => {
  it('one command with only the relay address: relay and both edge agents Ready, peer records from projected tokens', async () => {
    const t0 = Date.now()
    const r = await helm(['install', RELEASE, CHART_DIR, '-n', NS, '--create-namespace', '--set', `relay.announce[0]=${RELAY_IP}`])
    expect(r.code, r.out).toBe(0)
    const relay = await waitReady(NS, 'app.kubernetes.io/component=server', 1, 240_000)
    expect(relay[0].spec.nodeName).toBe(pub.name)
    const agents = await waitReady(NS, 'app.kubernetes.io/component=agent', 3, 240_000)
    timings.install_to_ready_ms = Date.now() - t0
    expect(agents.map((p) => p.spec.nodeName).sort()).toEqual(cluster.nodes.map((n) => n.name).sort())
    // the agents' tokens are the ones the kubelet projected into the pods (bound to pod + node)
    for (const p of agents) {
      const vols = p.spec.volumes.filter((v: any) => v.projected?.sources?.some((s: any) => s.serviceAccountToken != null))
      expect(vols.length, p.metadata.name).toBe(1)
    }
    // each agent published its peer record (a Lease named after its node) with its own peer id
    for (const node of cluster.nodes) {
      const st = await eventually(async () => await agentStatus(node), 60_000, 1000)
      const lease = await eventually(async () => await cluster.admin('GET', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/${node.name}`), 60_000, 1000)
      expect(JSON.stringify(lease)).toContain(st.peerId)
    }
  })

  it('a pod on the cone node calls web.shop.svc.cluster.local, served only by a pod on the symmetric node: 200 over the relayed path', async () => {
    await cluster.admin('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } })
    await cluster.admin('POST', '/api/v1/namespaces/shop/pods', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web', labels: { app: 'web' } },
      spec: {
        nodeName: sym.name,
        tolerations: [{ operator: 'Exists' }],
        containers: [{
          name: 'web',
          image: imageRef,
          imagePullPolicy: 'Never',
          command: ['node', '-e', "require('http').createServer((q, s) => s.end('web on ' + process.env.NODE_NAME)).listen(8080)"],
          env: [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
          ports: [{ containerPort: 8080 }],
          readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 }
        }]
      }
    })
    await cluster.admin('POST', '/api/v1/namespaces/shop/services', {
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] }
    })
    await waitReady('shop', 'app=web', 1, 120_000)
    const since = Date.now()
    // the client resolves the name through the resolver the kubelet gave it (clusterDNS: the
    // agent's node-local DNS) and prints one JSON line per request
    const script = `const http = require('http');
setInterval(() => {
  const t = Date.now()
  const req = http.get('http://web.shop.svc.cluster.local/', { timeout: 2000 }, (res) => {
    let body = ''; res.on('data', (d) => { body += d }); res.on('end', () => console.log(JSON.stringify({ t, ok: res.statusCode === 200, status: res.statusCode, body })))
  })
  req.on('timeout', () => req.destroy(new Error('timeout')))
  req.on('error', (e) => console.log(JSON.stringify({ t, ok: false, err: e.code ?? e.message })))
}, ${CLIENT_LOG_EVERY_MS})`
    await cluster.admin('POST', '/api/v1/namespaces/shop/pods', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'client' },
      spec: { nodeName: cone.name, tolerations: [{ operator: 'Exists' }], containers: [{ name: 'client', image: imageRef, imagePullPolicy: 'Never', command: ['node', '-e', script] }] }
    })
    const ok = await answersAfter(since, 10, 120_000)
    expect(ok.every((l) => l.status === 200 && l.body === `web on ${sym.name}`)).toBe(true)
    const st = await agentStatus(cone)
    const peer = st.peers.find((p: any) => p.node === sym.name)
    expect(peer?.path).toMatch(/^relay-/) // the symmetric NAT allows no punched path
    const resolv = await cone.crictl(['exec', await containerId(cone, 'client'), 'cat', '/etc/resolv.conf'])
    expect(resolv.stdout).toContain('nameserver 169.254.96.16')
  })

  it('the Service answers again after the relay pod is deleted and rescheduled (same relay identity)', async () => {
    const [relay] = await pods(NS, 'app.kubernetes.io/component=server')
    await cluster.admin('DELETE', `/api/v1/namespaces/${NS}/pods/${relay.metadata.name}`)
    const [next] = await eventually(async () => {
      const ps = (await pods(NS, 'app.kubernetes.io/component=server')).filter((p) => p.metadata.uid !== relay.metadata.uid && isReady(p))
      if (ps.length !== 1) throw new Error('new relay pod not Ready yet')
      return ps
    }, 180_000, 500)
    expect(next.spec.nodeName).toBe(pub.name)
    const since = Date.now()
    await answersAfter(since, 10, 120_000)
    const peer = (await agentStatus(cone)).peers.find((p: any) => p.node === sym.name)
    expect(peer?.path).toMatch(/^relay-/)
  })

  // An agent is its node's DNS and Service proxy, and the serving node's agent is the endpoint's
  // only way in: while either of those two restarts, requests time out. The roll must never
  // take more than one node's agent at a time, and each gap must stay short.
  it('helm upgrade with a changed value rolls the agents one node at a time; the Service answers throughout but for the restart of an agent on its path', async () => {
    const before = await pods(NS, 'app.kubernetes.io/component=agent')
    const oldUids = new Set(before.map((p) => p.metadata.uid))
    const leasesBefore = (await cluster.admin('GET', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`)).items.map((l: any) => l.metadata.name).sort()
    const since = Date.now()
    const r = await helm(['upgrade', RELEASE, CHART_DIR, '-n', NS, '--reuse-values', '--set', 'agent.logLevel=debug'])
    expect(r.code, r.out).toBe(0)
    // sample the agents until all three are new and Ready: never more than one node without a Ready agent
    let maxUnready = 0
    await eventually(async () => {
      const ps = await pods(NS, 'app.kubernetes.io/component=agent')
      const readyNodes = new Set(ps.filter(isReady).map((p) => p.spec.nodeName))
      maxUnready = Math.max(maxUnready, cluster.nodes.length - readyNodes.size)
      const fresh = ps.filter((p) => !oldUids.has(p.metadata.uid) && isReady(p))
      if (fresh.length !== 3) throw new Error(`${fresh.length}/3 agents rolled`)
    }, 300_000, 250)
    expect(maxUnready).toBeLessThanOrEqual(1)
    const lines = (await clientLines()).filter((l) => l.t > since)
    const windows = failureWindows(lines)
    timings.upgrade_requests = lines.length
    timings.upgrade_failed_requests = lines.filter((l) => !l.ok).length
    console.log(`[helm-install] upgrade: ${lines.length} requests, failures ${JSON.stringify(windows)}`)
    expect(windows.length, JSON.stringify(windows)).toBeLessThanOrEqual(2) // the client's node, the serving node
    for (const w of windows) expect(w.toMs - w.fromMs, JSON.stringify(w)).toBeLessThan(MAX_ROLL_GAP_MS)
    await answersAfter(Date.now(), 10, 120_000)
    // peer records were kept through the roll (same nodes, same Lease objects)
    const leasesAfter = (await cluster.admin('GET', `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`)).items.map((l: any) => l.metadata.name).sort()
    expect(leasesAfter).toEqual(leasesBefore)
  })

  it('helm test passes', async () => {
    const r = await helm(['test', RELEASE, '-n', NS, '--timeout', '3m'])
    expect(r.code, r.out).toBe(0)
    expect(r.out).toMatch(/Phase:\s+Succeeded/)
    expect(r.out).not.toMatch(/Phase:\s+Failed/)
  })

  it('the schema rejects a typo\'d key and a wrong type, naming the field', async () => {
    const typo = await helm(['template', RELEASE, CHART_DIR, '--set', `relay.announce[0]=${RELAY_IP}`, '--set', 'agent.dns.enabeld=true'])
    expect(typo.code).not.toBe(0)
    expect(typo.out).toContain('enabeld')
    const wrong = await helm(['template', RELEASE, CHART_DIR, '--set', `relay.announce[0]=${RELAY_IP}`, '--set-string', 'agent.listen.udpPort=abc'])
    expect(wrong.code).not.toBe(0)
    expect(wrong.out).toContain('udpPort')
  })

  it('helm uninstall leaves no chain, rule, device or address of the mesh on any node', async () => {
    const r = await helm(['uninstall', RELEASE, '-n', NS, '--wait', '--timeout', '3m'])
    expect(r.code, r.out).toBe(0)
    for (const node of cluster.nodes) {
      await eventually(async () => {
        const ps = await node.crictl(['ps', '-q', '--name', '^(agent|server)$'])
        if (ps.stdout.trim() !== '') throw new Error(`mesh containers still running on ${node.name}`)
      }, 120_000, 500)
      expect(await meshLeftovers(node), node.name).toEqual([])
    }
  })
})
