// The chart installed on the test cluster, as a user drives it: helm with the cluster's admin
// kubeconfig, waits on pod readiness, the web/client workloads a user journey needs, and what a
// node still holds of the mesh. Shared by test/e2e/helm-install.test.ts and the demo. The
// apiserver cannot reach the edge kubelets: pod output and `edgemesh status` are read through
// each node's own runtime (crictl).
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { Cluster, ClusterNode } from './cluster.ts'
import { CHART_DIR } from '../controlplane/cluster.ts'
import { HELM_BIN } from '../controlplane/harness.ts'
import { eventually } from '../lab/wait.ts'

const execFileP = promisify(execFile)

export const MESH_NAMESPACE = 'edgemesh'
export const AGENT_SELECTOR = 'app.kubernetes.io/component=agent'
export const SERVER_SELECTOR = 'app.kubernetes.io/component=server'
export { CHART_DIR }

/** helm against the cluster; never throws (code and combined output). */
export async function helm (cluster: Cluster, args: string[], timeoutMs = 240_000): Promise<{ code: number, out: string }> {
  try {
    const r = await execFileP(HELM_BIN, [...args, '--kubeconfig', cluster.kubeconfig], { timeout: timeoutMs, maxBuffer: 16 << 20 })
    return { code: 0, out: r.stdout + r.stderr }
  } catch (e: any) {
    return { code: typeof e.code === 'number' ? e.code : 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}` }
  }
}

export async function pods (cluster: Cluster, ns: string, selector?: string): Promise<any[]> {
  const q = selector == null ? '' : `?labelSelector=${encodeURIComponent(selector)}`
  return (await cluster.admin('GET', `/api/v1/namespaces/${ns}/pods${q}`)).items
}

export const isReady = (p: any): boolean => p.metadata.deletionTimestamp == null &&
  (p.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True')

/** Waits until the pods matching selector are exactly `count`, all Ready; returns them. */
export async function waitReady (cluster: Cluster, ns: string, selector: string, count: number, timeoutMs: number): Promise<any[]> {
  return await eventually(async () => {
    const ps = await pods(cluster, ns, selector)
    const summary = ps.map((p) => `${p.metadata.name}@${p.spec.nodeName}:${p.status?.phase}${isReady(p) ? '/ready' : ''}`).join(', ')
    if (ps.length !== count || !ps.every(isReady)) throw new Error(`${selector}: want ${count} Ready, have [${summary}]`)
    return ps
  }, timeoutMs, 500)
}

/** `edgemesh status --json` inside the Ready agent pod on node (crictl exec, node-local). */
export async function agentStatus (cluster: Cluster, node: ClusterNode): Promise<any> {
  const pod = (await pods(cluster, MESH_NAMESPACE, AGENT_SELECTOR)).find((p) => p.spec.nodeName === node.name && isReady(p))
  if (pod == null) throw new Error(`no Ready agent pod on ${node.name}`)
  const r = await node.containerExec(pod.metadata.name, ['node', 'bin/edgemesh.js', 'status', '--json'], { namespace: MESH_NAMESPACE, container: 'agent' })
  if (r.code !== 0) throw new Error(`edgemesh status on ${node.name}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/** A pod on `node` serving `web on <node name>` over HTTP on 8080, and Service `web` (port 80) for it. */
export async function createWeb (cluster: Cluster, ns: string, node: ClusterNode, image: string): Promise<void> {
  await cluster.admin('POST', `/api/v1/namespaces/${ns}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', labels: { app: 'web' } },
    spec: {
      nodeName: node.name,
      tolerations: [{ operator: 'Exists' }],
      containers: [{
        name: 'web',
        image,
        imagePullPolicy: 'Never',
        command: ['node', '-e', "require('http').createServer((q, s) => s.end('web on ' + process.env.NODE_NAME)).listen(8080)"],
        env: [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
        ports: [{ containerPort: 8080 }],
        readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 }
      }]
    }
  })
  await cluster.admin('POST', `/api/v1/namespaces/${ns}/services`, {
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] }
  })
}

export interface ClientLine { t: number, ok: boolean, status?: number, body?: string, err?: string }

/**
 * A pod on `node` requesting `url` every `everyMs` (2 s timeout), one JSON line per request on
 * its stdout. It resolves names through the resolver the kubelet gave it (clusterDNS).
 */
export async function createClient (cluster: Cluster, ns: string, node: ClusterNode, image: string, url: string, everyMs: number): Promise<void> {
  const script = `const http = require('http');
setInterval(() => {
  const t = Date.now()
  const req = http.get(${JSON.stringify(url)}, { timeout: 2000 }, (res) => {
    let body = ''; res.on('data', (d) => { body += d }); res.on('end', () => console.log(JSON.stringify({ t, ok: res.statusCode === 200, status: res.statusCode, body })))
  })
  req.on('timeout', () => req.destroy(new Error('timeout')))
  req.on('error', (e) => console.log(JSON.stringify({ t, ok: false, err: e.code ?? e.message })))
}, ${everyMs})`
  await cluster.admin('POST', `/api/v1/namespaces/${ns}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'client' },
    spec: { nodeName: node.name, tolerations: [{ operator: 'Exists' }], containers: [{ name: 'client', image, imagePullPolicy: 'Never', command: ['node', '-e', script] }] }
  })
}

/** The client pod's results so far. */
export async function clientLines (node: ClusterNode, ns: string): Promise<ClientLine[]> {
  const out = await node.containerLogs('client', { namespace: ns })
  return out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
}

/** Waits for `n` successful answers sent after time `since`. */
export async function answersAfter (node: ClusterNode, ns: string, since: number, n: number, timeoutMs: number): Promise<ClientLine[]> {
  return await eventually(async () => {
    const ok = (await clientLines(node, ns)).filter((l) => l.t > since && l.ok)
    if (ok.length < n) throw new Error(`${ok.length}/${n} answers since ${new Date(since).toISOString()}`)
    return ok
  }, timeoutMs, 500)
}

export interface FailureWindow { fromMs: number, toMs: number, failed: number, errors: string[] }

/** Runs of consecutive failed requests, relative to the first line, with their error kinds. */
export function failureWindows (lines: ClientLine[]): FailureWindow[] {
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

/**
 * What a node's network namespace still holds of the mesh: chains, rules, devices, addresses.
 * A listing that fails is a finding too: an empty listing must mean "nothing left", never
 * "could not look".
 */
export async function meshLeftovers (node: ClusterNode, meshAddress = '169.254.96.16'): Promise<string[]> {
  const found: string[] = []
  const list = async (argv: string[]): Promise<string[]> => {
    const r = await node.exec(argv)
    if (r.code !== 0) { found.push(`${argv.join(' ')} failed (exit ${r.code}): ${r.stderr.trim().slice(0, 300)}`); return [] }
    return r.stdout.split('\n')
  }
  for (const save of ['iptables-nft-save', 'iptables-legacy-save']) {
    // kube-proxy's own chains name Services of the mesh's namespace (edgemesh/...) until it
    // syncs the deletion: they are kube-proxy's, not the mesh's
    for (const l of await list([save])) if (/edgemesh/i.test(l) && !/^(-A |:)KUBE-/.test(l)) found.push(`${save}: ${l}`)
  }
  let chain = ''
  for (const l of await list(['nft', 'list', 'ruleset'])) {
    chain = /^\s*chain (\S+)/.exec(l)?.[1] ?? chain
    if (/edgemesh/i.test(l) && !chain.startsWith('KUBE-')) found.push(`nft: ${l.trim()}`)
  }
  for (const l of await list(['ip', '-o', 'link'])) if (/edgemesh/i.test(l)) found.push(`link: ${l}`)
  for (const l of await list(['ip', '-o', 'addr'])) if (l.includes(meshAddress)) found.push(`addr: ${l}`)
  return found
}
