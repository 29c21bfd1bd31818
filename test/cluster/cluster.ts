// A real Kubernetes cluster in the NAT lab: etcd + kube-apiserver + kube-controller-manager +
// kube-scheduler on this host's loopback (the apiserver exposed to the lab at relay0's public
// address), and a kubelet + containerd per lab host, each in that host's network namespace,
// reaching the apiserver through its NAT. The apiserver never reaches the kubelets (the edge):
// read results with crictl on the node or from host paths, never kubectl exec/logs.
// See test/cluster/README.md.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { Lab } from '../lab/lab.ts'
import { exposeToLab } from '../lab/expose.ts'
import { procStartTime, signalRef, startProcess, type LabProcess, type ProcRef } from '../lab/proc.ts'
import { sleep } from '../lab/wait.ts'
import { CONTROL_PLANE_BIN, startControlPlane, type ControlPlane } from '../controlplane/harness.ts'
import { apiRequest, serviceAccountToken } from '../controlplane/cluster.ts'
import { pauseImage } from './image.ts'
import { CNI_BIN_DIR, NodeRunner, RUNC, removeNodeLeftovers, type ClusterNode, type NodeRole } from './node.ts'
import { restoreKernelTunables, saveKernelTunables } from './kernel-tunables.ts'

export type { ClusterNode, NodeRole, PodContainer } from './node.ts'
export { pauseImage } from './image.ts'

export const API_IP = '198.51.100.10' // relay0
export const API_PORT = 6443
export const DEFAULT_CLUSTER_DNS = '169.254.96.16' // the mesh's node-local DNS address
export const KUBERNETES_SERVICE_IP = '10.96.0.1' // first address of the harness's Service range
/** every node's pod range (node i: 10.200.i.0/24) */
export const CLUSTER_CIDR = '10.200.0.0/16'
export const EDGE_ROLE_LABEL = 'node-role.kubernetes.io/edge'
/**
 * Host paths every node gets its own copy of: the kubelet's log link dirs, the CNI cache and the
 * chart's agent.hostPaths (the agent's key and control socket; one per node, as on real nodes).
 */
export const DEFAULT_PRIVATE_PATHS = ['/var/log/containers', '/var/log/pods', '/var/lib/cni', '/var/lib/edgemesh', '/run/edgemesh']

export interface ClusterOptions {
  /** lab host names ('relay0', 'a1', ...); node i gets the pod range 10.200.i.0/24 */
  nodes: Array<{ host: string, role: NodeRole }>
  /** the kubelets' clusterDNS (default 169.254.96.16) */
  clusterDns?: string
  /** more host paths each node gets its own copy of (see DEFAULT_PRIVATE_PATHS; node.hostPath() maps them) */
  privatePaths?: string[]
}

export interface Cluster {
  cp: ControlPlane
  nodes: ClusterNode[]
  /** where the lab (kubelets, host-network pods) reaches the apiserver */
  apiUrlInLab: string
  /** admin kubeconfig for this host (helm, kubectl): the apiserver on loopback */
  kubeconfig: string
  dir: string
  node(name: string): ClusterNode
  /** an admin API call that throws on a non-2xx answer */
  admin(method: string, path: string, body?: unknown, contentType?: string): Promise<any>
  /** imports a docker-archive or oci-archive into every node's containerd (k8s.io) as ref */
  importImage(archive: string, ref: string): Promise<void>
  timings: { controlPlaneMs: number, nodesReadyMs: number }
  stop(): Promise<void>
}

const BINARIES = ['kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy', 'containerd', 'containerd-shim-runc-v2', 'ctr', 'crictl']

function requirePrereqs (): void {
  for (const b of BINARIES) {
    if (!existsSync(join(CONTROL_PLANE_BIN, b))) {
      throw new Error(`test cluster: ${join(CONTROL_PLANE_BIN, b)} is missing; run \`bash test/cluster/build.sh\``)
    }
  }
  if (!existsSync(RUNC)) throw new Error(`test cluster: ${RUNC} is missing; run \`bash test/prereqs.sh cluster\` (Debian package runc)`)
  if (!existsSync(join(CNI_BIN_DIR, 'bridge'))) {
    throw new Error(`test cluster: ${CNI_BIN_DIR}/bridge is missing; run \`bash test/prereqs.sh cluster\` (Debian package containernetworking-plugins)`)
  }
}

const CLUSTER_DIR_PARENT = '/tmp'
/** The cluster's processes on this host and the control plane's dir, for cleanupStaleClusters. */
const HOST_RECORD = 'host-procs.json'
interface HostRecord { procs: ProcRef[], dirs: string[], mountPoints?: string[] }
const LAB_RECORDS = '/tmp/edgemesh-labs'

/**
 * Removes what clusters of dead labs left (a test run killed before stop()): their lab's record
 * is gone (createLab's stale-lab cleanup killed the kubelets and containerds and removed it),
 * but shims, containers, mounts, cgroups and the directory remain. Returns the removed dirs.
 */
export async function cleanupStaleClusters (): Promise<string[]> {
  const cleaned: string[] = []
  for (const name of readdirSync(CLUSTER_DIR_PARENT)) {
    const m = /^emc-([a-z0-9][a-z0-9-]{0,15})[A-Za-z0-9]{6}$/.exec(name)
    if (m === null) continue
    const prefix = m[1] as string
    if (existsSync(join(LAB_RECORDS, `${prefix}.json`))) continue // its lab is alive (or not yet cleaned)
    const dir = join(CLUSTER_DIR_PARENT, name)
    const problems: string[] = []
    // host processes (etcd, apiserver, controllers) are not the lab's: the cluster noted them
    let host: HostRecord = { procs: [], dirs: [] }
    try { host = JSON.parse(readFileSync(join(dir, HOST_RECORD), 'utf8')) as HostRecord } catch { /* none yet */ }
    for (const ref of host.procs) signalRef(ref, 'SIGKILL')
    for (const d of host.dirs) if (d.startsWith('/tmp/edgemesh-cp-')) await rm(d, { recursive: true, force: true })
    for (const node of readdirSync(dir)) {
      if (!existsSync(join(dir, node, 'containerd.toml'))) continue
      problems.push(...await removeNodeLeftovers(join(dir, node), `/edgemesh-${prefix}${node}`))
    }
    if (problems.length === 0) {
      await rm(dir, { recursive: true, force: true })
      cleaned.push(dir)
      removeMountPoints(host.mountPoints ?? [], dir)
    }
  }
  return cleaned
}

/** Creates the missing ones (a bind mount needs its target); returns every directory created, parents first. */
function makeMountPoints (paths: string[]): string[] {
  const created: string[] = []
  for (const p of paths) {
    const missing: string[] = []
    for (let d = p; !existsSync(d); d = dirname(d)) missing.unshift(d)
    for (const d of missing) { mkdirSync(d); created.push(d) }
  }
  return created
}

/** Mount points made for the nodes' private paths, when empty and no other cluster may use them. */
function removeMountPoints (created: string[], ourDir: string): void {
  if (readdirSync(CLUSTER_DIR_PARENT).some(n => n.startsWith('emc-') && join(CLUSTER_DIR_PARENT, n) !== ourDir)) return
  for (const d of [...created].reverse()) { try { rmdirSync(d) } catch { /* not empty: keep */ } }
}

function isReady (node: any): boolean {
  return (node?.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True')
}

export async function startCluster (lab: Lab, opts: ClusterOptions): Promise<Cluster> {
  const t0 = performance.now()
  requirePrereqs()
  const names = opts.nodes.map(n => n.host)
  if (new Set(names).size !== names.length) throw new Error(`test cluster: a lab host appears twice in nodes (${names.join(', ')})`)
  for (const n of opts.nodes) lab.host(n.host) // throws on unknown hosts
  if (opts.nodes.length > 250) throw new Error('test cluster: at most 250 nodes')
  await cleanupStaleClusters()
  const sandboxImage = await pauseImage()
  // short: containerd's shim sockets live below it (unix socket paths have ~107 bytes)
  const dir = await mkdtemp(join(CLUSTER_DIR_PARENT, `emc-${lab.prefix}`))
  const apiUrlInLab = `https://${API_IP}:${API_PORT}`
  let cp: ControlPlane | undefined
  let exposed: { close: () => Promise<void> } | undefined
  let exposedEndpoint: { close: () => Promise<void> } | undefined
  const controllers: LabProcess[] = []
  const nodes: NodeRunner[] = []
  let tunablesToken: string | undefined
  const createdMountPoints: string[] = []
  const hostRecord: HostRecord = { procs: [], dirs: [] }
  const note = (p: LabProcess): LabProcess => {
    hostRecord.procs.push({ pid: p.pid, startTime: procStartTime(p.pid) ?? 0 })
    writeFileSync(join(dir, HOST_RECORD), JSON.stringify(hostRecord))
    return p
  }

  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      const problems: string[] = []
      // Nodes first (their pods and mounts), while the apiserver still answers the kubelets.
      const results = await Promise.allSettled(nodes.map(async n => { await n.stop() }))
      for (const r of results) if (r.status === 'rejected') problems.push(String(r.reason))
      for (const c of controllers) await c.kill('SIGTERM', 3000)
      await exposed?.close()
      await exposedEndpoint?.close()
      await cp?.stop()
      if (tunablesToken !== undefined) restoreKernelTunables(tunablesToken)
      removeMountPoints(createdMountPoints, dir)
      if (problems.length === 0) await rm(dir, { recursive: true, force: true })
      if (problems.length > 0) throw new Error(`test cluster stop: ${problems.join('\n')}`)
    })()
    return stopping
  }

  try {
    // The apiserver publishes where the lab reaches it as the kubernetes Service's endpoint
    // (API_IP:<its port>, exposed below too), which kube-proxy on each node DNATs 10.96.0.1:443 to.
    cp = await startControlPlane({
      extraSans: [API_IP, KUBERNETES_SERVICE_IP],
      withNodes: true,
      apiserverFlags: ['--endpoint-reconciler-type=lease', `--advertise-address=${API_IP}`],
      spawn: (argv, o) => note(startProcess(argv, o))
    })
    const api = cp
    hostRecord.dirs.push(api.dir)
    const admin = async (method: string, path: string, body?: unknown, contentType?: string): Promise<any> => {
      const r = await apiRequest(api, api.adminToken, method, path, body, contentType)
      if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 300)}`)
      return r.body
    }
    const kubeconfig = join(dir, 'admin.kubeconfig')
    await api.writeKubeconfig(kubeconfig)
    exposed = await exposeToLab(lab, 'relay0', { ip: API_IP, port: API_PORT }, { host: '127.0.0.1', port: api.port })
    exposedEndpoint = await exposeToLab(lab, 'relay0', { ip: API_IP, port: api.port }, { host: '127.0.0.1', port: api.port })
    // kube-proxy's identity, as kubeadm makes it: a ServiceAccount bound to system:node-proxier
    await admin('POST', '/api/v1/namespaces/kube-system/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'kube-proxy' } })
    await admin('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'test-cluster:kube-proxy' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:node-proxier' },
      subjects: [{ kind: 'ServiceAccount', name: 'kube-proxy', namespace: 'kube-system' }]
    })
    const kubeProxyKubeconfig = join(dir, 'kube-proxy.kubeconfig')
    await api.writeKubeconfig(kubeProxyKubeconfig,
      await serviceAccountToken(api, { namespace: 'kube-system', serviceAccount: 'kube-proxy', expirationSeconds: 86_400 }), apiUrlInLab)

    const common = [`--kubeconfig=${kubeconfig}`, '--leader-elect=false', '--secure-port=0', '--v=1']
    const kcm = note(startProcess([join(CONTROL_PLANE_BIN, 'kube-controller-manager'), ...common,
      '--controllers=*', '--use-service-account-credentials=true', '--allocate-node-cidrs=false',
      `--service-account-private-key-file=${join(api.dir, 'sa.key')}`, `--root-ca-file=${join(api.dir, 'ca.crt')}`,
      `--cluster-signing-cert-file=${join(api.dir, 'ca.crt')}`, `--cluster-signing-key-file=${join(api.dir, 'ca.key')}`,
      '--service-cluster-ip-range=10.96.0.0/16', '--concurrent-serviceaccount-token-syncs=2'],
    { logFile: join(dir, 'kube-controller-manager.log') }))
    controllers.push(kcm)
    controllers.push(note(startProcess([join(CONTROL_PLANE_BIN, 'kube-scheduler'), ...common], { logFile: join(dir, 'kube-scheduler.log') })))
    // The controller-manager works once it has made the default namespace's ServiceAccount
    // and root CA ConfigMap (pods need both: ServiceAccount admission, projected tokens).
    await waitUntil('kube-controller-manager', controllers, 120_000, async () => {
      const sa = await apiRequest(api, api.adminToken, 'GET', '/api/v1/namespaces/default/serviceaccounts/default')
      const ca = await apiRequest(api, api.adminToken, 'GET', '/api/v1/namespaces/default/configmaps/kube-root-ca.crt')
      return sa.status === 200 && ca.status === 200
    })
    const controlPlaneMs = performance.now() - t0

    tunablesToken = saveKernelTunables() // the kubelet sets vm.overcommit_memory, kernel.panic, ... host-wide
    const privatePaths = [...new Set([...DEFAULT_PRIVATE_PATHS, ...(opts.privatePaths ?? [])])]
    createdMountPoints.push(...makeMountPoints(privatePaths))
    hostRecord.mountPoints = createdMountPoints
    writeFileSync(join(dir, HOST_RECORD), JSON.stringify(hostRecord))
    const ctx = { lab, cp: api, apiUrlInLab, sandboxImage, clusterDns: opts.clusterDns ?? DEFAULT_CLUSTER_DNS, kubernetesServiceIp: KUBERNETES_SERVICE_IP, privatePaths,
      kubeProxyKubeconfig, clusterCidr: CLUSTER_CIDR }
    opts.nodes.forEach((n, i) => nodes.push(new NodeRunner(ctx, { host: n.host, role: n.role, podCidr: `10.200.${i}.0/24` }, dir)))
    const t1 = performance.now()
    // all settle before a failure is thrown: stop() must not race a node still starting
    const started = await Promise.allSettled(nodes.map(async n => { await n.start() }))
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed !== undefined) throw failed.reason
    await waitUntil('nodes Ready', controllers, 180_000, async () => {
      const list = await admin('GET', '/api/v1/nodes')
      const ready = new Set((list.items ?? []).filter(isReady).map((x: any) => x.metadata.name))
      return nodes.every(n => ready.has(n.name))
    }, async () => {
      const list = await admin('GET', '/api/v1/nodes').catch(() => ({ items: [] }))
      return `nodes: ${JSON.stringify((list.items ?? []).map((x: any) => [x.metadata.name, (x.status?.conditions ?? []).find((c: any) => c.type === 'Ready')?.message]))}; logs in ${dir}/<node>/kubelet.log`
    })
    for (const n of nodes) {
      if (n.role !== 'edge') continue
      await admin('PATCH', `/api/v1/nodes/${n.name}`, { metadata: { labels: { [EDGE_ROLE_LABEL]: '' } } }, 'application/merge-patch+json')
    }
    const nodesReadyMs = performance.now() - t1

    return {
      cp: api,
      nodes,
      apiUrlInLab,
      kubeconfig,
      dir,
      node (name: string): ClusterNode {
        const n = nodes.find(x => x.name === name)
        if (n === undefined) throw new Error(`test cluster: no node ${name} (have ${nodes.map(x => x.name).join(', ')})`)
        return n
      },
      admin,
      async importImage (archive: string, ref: string): Promise<void> {
        await Promise.all(nodes.map(async n => { await n.importImage(archive, ref) }))
      },
      timings: { controlPlaneMs, nodesReadyMs },
      stop
    }
  } catch (err) {
    await stop().catch((e: unknown) => { (err as Error).message += `\n(and cleaning up: ${(e as Error).message})` })
    throw err
  }
}

/** Polls ok() (errors count as false) until true; fails early if a controller process exits. */
async function waitUntil (what: string, procs: LabProcess[], timeoutMs: number, ok: () => Promise<boolean>, detail?: () => Promise<string>): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await ok().catch(() => false)) return
    const dead = procs.find(p => p.child.exitCode !== null || p.child.signalCode !== null)
    if (dead !== undefined) throw new Error(`test cluster: ${dead.child.spawnfile} exited while waiting for ${what}:\n${dead.stderr().slice(-3000)}`)
    if (Date.now() > deadline) throw new Error(`test cluster: ${what} not reached after ${timeoutMs} ms${detail === undefined ? '' : '; ' + await detail()}`)
    await sleep(500)
  }
}
