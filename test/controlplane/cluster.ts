// Cluster helpers on top of the control-plane harness: admin clients, the mesh's RBAC and
// peer-record policy installed from the real Helm chart, and agent credentials that look like
// the ones the kubelet projects (a ServiceAccount token bound to a Pod on a Node, which carries
// the node-name claim the peer-record policy checks).
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { ApiException, CoreV1Api, KubeConfig, KubernetesObjectApi, PatchStrategy, type KubernetesObject, type V1Node, type V1Pod } from '@kubernetes/client-node'
import { parseAllDocuments } from 'yaml'
import { HELM_BIN, type ControlPlane } from './harness.ts'
import { sleep } from '../lab/wait.ts'

const execFileP = promisify(execFile)

export const CHART_DIR = fileURLToPath(new URL('../../manifests/helm/edgemesh/', import.meta.url))
export const PLAIN_MANIFEST = fileURLToPath(new URL('../../manifests/plain/edgemesh.yaml', import.meta.url))
export const AGENT_SERVICE_ACCOUNT = 'edgemesh-agent'
export const SERVER_SERVICE_ACCOUNT = 'edgemesh-server'
export const PEER_RECORD_POLICY = 'edgemesh-agent-peer-record'
/** the Kubernetes version the chart is rendered for (the harness runs kube-apiserver v1.36.3) */
export const KUBE_VERSION = '1.36.3'
/** apiserver audience of ServiceAccount tokens (--service-account-issuer in the harness) */
const AUDIENCE = 'https://kubernetes.default.svc'
/** what installMeshRbac applies from the rendered chart */
export const RBAC_KINDS: ReadonlySet<string> = new Set(['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding',
  'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'])
/** relay values the chart needs to render the agents (the chart refuses agents without a relay) */
const DUMMY_RELAY = ['--set', 'relay.announce[0]=203.0.113.10', '--set', 'relay.peerId=12D3KooWPgHATvH9wN3n43y2TgqGQabmPTxmEDX3rUHkRqLbuZAT']

export type KubeObject = KubernetesObject & Record<string, any>

function kubeConfig (cp: ControlPlane, token: string): KubeConfig {
  const kc = new KubeConfig()
  kc.loadFromOptions({
    clusters: [{ name: 'test', server: cp.url, caData: Buffer.from(cp.caPem).toString('base64'), skipTLSVerify: false }],
    users: [{ name: 'user', token }],
    contexts: [{ name: 'test', cluster: 'test', user: 'user' }],
    currentContext: 'test'
  })
  return kc
}

/** client-node KubeConfig for the admin (system:masters) token, verifying TLS with the test CA. */
export function adminKubeConfig (cp: ControlPlane): KubeConfig { return kubeConfig(cp, cp.adminToken) }

/** client-node KubeConfig for any bearer token (an agent's, say). */
export function tokenKubeConfig (cp: ControlPlane, token: string): KubeConfig { return kubeConfig(cp, token) }

/** Writes a kubeconfig for `token` (what an agent started with `kubernetes.kubeconfig` reads). */
export async function writeAgentKubeconfig (cp: ControlPlane, file: string, token: string): Promise<void> {
  await cp.writeKubeconfig(file, token)
}

export interface ApiResponse {
  status: number
  /** the parsed JSON body (undefined when the body is not one JSON document, e.g. a watch stream) */
  body: any
  text: string
}

/**
 * One raw request as `token` (status and body, never throws on an HTTP error status), so tests
 * see exactly what the apiserver answered. Paths are absolute (/api/v1/...).
 */
export async function apiRequest (cp: ControlPlane, token: string, method: string, path: string, body?: unknown,
  contentType = 'application/json'): Promise<ApiResponse> {
  const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)
  return await new Promise((resolve, reject) => {
    const req = httpsRequest(new URL(path, cp.url), {
      method,
      ca: cp.caPem,
      headers: {
        authorization: `Bearer ${token}`,
        accept: 'application/json',
        ...(payload === undefined ? {} : { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) })
      },
      timeout: 30_000
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let parsed: any
        try { parsed = text === '' ? undefined : JSON.parse(text) } catch { parsed = undefined }
        resolve({ status: res.statusCode ?? 0, body: parsed, text })
      })
    })
    req.on('timeout', () => { req.destroy(new Error(`${method} ${path}: timed out`)) })
    req.on('error', reject)
    if (payload !== undefined) req.write(payload)
    req.end()
  })
}

export interface RenderOptions {
  namespace?: string
  releaseName?: string
  /** extra `helm template` arguments, e.g. ['--set', 'agent.kubernetes.enabled=false'] */
  args?: string[]
}

/** `helm template` of the chart with the real helm binary; the rendered objects. */
export async function renderChart (opts: RenderOptions = {}): Promise<KubeObject[]> {
  const home = await mkdtemp(join(tmpdir(), 'edgemesh-helm-'))
  try {
    const { stdout } = await execFileP(HELM_BIN, ['template', opts.releaseName ?? 'edgemesh', CHART_DIR,
      '--namespace', opts.namespace ?? 'edgemesh', '--kube-version', KUBE_VERSION, ...DUMMY_RELAY, ...(opts.args ?? [])], {
      env: { ...process.env, HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') },
      maxBuffer: 16 * 1024 * 1024
    }).catch((err: any) => { throw new Error(`helm template failed: ${err.stderr ?? err.message}`) })
    return parseManifests(stdout, 'helm template')
  } finally {
    await rm(home, { recursive: true, force: true })
  }
}

/** The objects of a multi-document YAML stream (empty documents dropped). */
export function parseManifests (text: string, source: string): KubeObject[] {
  const docs = parseAllDocuments(text)
  if (!Array.isArray(docs)) throw new Error(`${source}: expected a multi-document YAML stream`)
  const out: KubeObject[] = []
  for (const d of docs) {
    if (d.errors.length > 0) throw new Error(`${source}: ${d.errors.map((e) => e.message).join('; ')}`)
    const obj = d.toJS() as KubeObject | null
    if (obj != null) out.push(obj)
  }
  return out
}

const isConflict = (err: unknown): boolean => err instanceof ApiException && err.code === 409
const isNotFound = (err: unknown): boolean => err instanceof ApiException && err.code === 404

/** Creates the Namespace unless it exists. */
export async function ensureNamespace (cp: ControlPlane, name: string): Promise<void> {
  const core = adminKubeConfig(cp).makeApiClient(CoreV1Api)
  try {
    await core.createNamespace({ body: { metadata: { name } } })
  } catch (err) {
    if (!isConflict(err)) throw err
  }
}

/** Server-side applies the objects as the admin (field manager edgemesh-tests). */
export async function applyObjects (cp: ControlPlane, objects: KubeObject[]): Promise<void> {
  const client = KubernetesObjectApi.makeApiClient(adminKubeConfig(cp))
  for (const obj of objects) {
    try {
      await client.patch(obj, undefined, undefined, 'edgemesh-tests', true, PatchStrategy.ServerSideApply)
    } catch (err) {
      const detail = err instanceof ApiException ? `${err.code} ${typeof err.body === 'string' ? err.body : JSON.stringify(err.body)}` : String(err)
      throw new Error(`apply ${obj.kind}/${obj.metadata?.name}: ${detail}`)
    }
  }
}

/** A ServiceAccount token that is NOT bound to any object (no node-name claim). */
export async function serviceAccountToken (cp: ControlPlane, opts: { namespace?: string, serviceAccount: string, expirationSeconds?: number }): Promise<string> {
  const core = adminKubeConfig(cp).makeApiClient(CoreV1Api)
  const tr = await core.createNamespacedServiceAccountToken({
    name: opts.serviceAccount,
    namespace: opts.namespace ?? 'edgemesh',
    body: { spec: { audiences: [AUDIENCE], expirationSeconds: opts.expirationSeconds ?? 3600 } }
  })
  const token = tr.status?.token
  if (token == null || token === '') throw new Error('TokenRequest returned no token')
  return token
}

export interface InstallResult {
  /** what was applied (the Namespace first) */
  objects: KubeObject[]
  /** from the last apply until the peer-record policy denied a probe write */
  enforcedAfterMs: number
  /** probe writes answered before the policy denied one */
  probes: number
}

/**
 * Renders the chart with helm and applies its Namespace, ServiceAccounts, RBAC and the
 * peer-record ValidatingAdmissionPolicy (+ binding): nothing else (no workloads). Returns once
 * the policy is enforced and the agent's RBAC is in effect: a dry-run Lease create with an
 * unbound agent token (no node-name claim) must come back 403 from the policy (not from RBAC),
 * and the same token must be able to list Services.
 */
export async function installMeshRbac (cp: ControlPlane, opts: { namespace?: string, timeoutMs?: number, chartArgs?: string[] } = {}): Promise<InstallResult> {
  const namespace = opts.namespace ?? 'edgemesh'
  const rendered = await renderChart({ namespace, args: opts.chartArgs ?? [] })
  const picked = rendered.filter((o) => RBAC_KINDS.has(o.kind ?? ''))
  for (const kind of ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']) {
    if (!picked.some((o) => o.kind === kind)) throw new Error(`the rendered chart has no ${kind}`)
  }
  const objects = picked.some((o) => o.kind === 'Namespace')
    ? picked
    : [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } }, ...picked]
  await ensureNamespace(cp, namespace)
  await applyObjects(cp, objects.filter((o) => o.kind !== 'Namespace'))
  const applied = Date.now()

  const probe = await serviceAccountToken(cp, { namespace, serviceAccount: AGENT_SERVICE_ACCOUNT, expirationSeconds: 600 })
  const deadline = applied + (opts.timeoutMs ?? 30_000)
  const lease = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'edgemesh-policy-probe', namespace } }
  let probes = 0
  let last = ''
  for (;;) {
    const write = await apiRequest(cp, probe, 'POST', `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases?dryRun=All`, lease)
    probes++
    const enforced = write.status === 403 && write.text.includes(`ValidatingAdmissionPolicy '${PEER_RECORD_POLICY}'`)
    const read = enforced ? await apiRequest(cp, probe, 'GET', '/api/v1/services?limit=1') : undefined
    if (enforced && read?.status === 200) return { objects, enforcedAfterMs: Date.now() - applied, probes }
    last = `lease write ${write.status} ${write.text.slice(0, 300)}; services list ${read?.status ?? '-'}`
    if (Date.now() > deadline) throw new Error(`installMeshRbac: the peer-record policy is not enforced after ${opts.timeoutMs ?? 30_000} ms (${probes} probes); last: ${last}`)
    await sleep(100)
  }
}

/** A stable 10.x.y.z address for a node name (10.0.0.0/8, never .0 or .255 in the last octet). */
export function nodeInternalIP (nodeName: string): string {
  const h = createHash('sha256').update(nodeName).digest()
  return `10.${h[0]!}.${h[1]!}.${1 + (h[2]! % 254)}`
}

/** Creates Node `nodeName` with an InternalIP unless it exists; returns the Node. */
export async function ensureNode (cp: ControlPlane, nodeName: string, internalIP = nodeInternalIP(nodeName)): Promise<V1Node> {
  const core = adminKubeConfig(cp).makeApiClient(CoreV1Api)
  try {
    return await core.readNode({ name: nodeName })
  } catch (err) {
    if (!isNotFound(err)) throw err
  }
  const addresses = [{ type: 'InternalIP', address: internalIP }, { type: 'Hostname', address: nodeName }]
  let node: V1Node
  try {
    node = await core.createNode({ body: { metadata: { name: nodeName, labels: { 'kubernetes.io/hostname': nodeName } }, status: { addresses } } })
  } catch (err) {
    if (!isConflict(err)) throw err
    return await core.readNode({ name: nodeName })
  }
  // the kubelet registers its node with status; should the apiserver drop it, set it explicitly
  if ((node.status?.addresses ?? []).length === 0) {
    node = await core.replaceNodeStatus({ name: nodeName, body: { ...node, status: { ...node.status, addresses } } })
  }
  return node
}

/**
 * A token like the one the kubelet projects into agent pod `edgemesh-agent-<nodeName>`: the Node
 * and the Pod (spec.nodeName, serviceAccountName edgemesh-agent) are created when missing, then a
 * TokenRequest bound to the Pod. The apiserver adds the node claim, which it exposes as
 * userInfo.extra["authentication.kubernetes.io/node-name"]. The token stops working when the Pod
 * is deleted.
 */
export async function agentToken (cp: ControlPlane, opts: { namespace?: string, nodeName: string, expirationSeconds?: number, serviceAccount?: string }): Promise<string> {
  const namespace = opts.namespace ?? 'edgemesh'
  const serviceAccount = opts.serviceAccount ?? AGENT_SERVICE_ACCOUNT
  await ensureNode(cp, opts.nodeName)
  const core = adminKubeConfig(cp).makeApiClient(CoreV1Api)
  const podName = `edgemesh-agent-${opts.nodeName}`
  let pod: V1Pod
  try {
    pod = await core.readNamespacedPod({ name: podName, namespace })
  } catch (err) {
    if (!isNotFound(err)) throw err
    pod = await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: podName, namespace, labels: { 'app.kubernetes.io/name': 'edgemesh', 'app.kubernetes.io/component': 'agent' } },
        spec: {
          nodeName: opts.nodeName,
          serviceAccountName: serviceAccount,
          hostNetwork: true,
          containers: [{ name: 'agent', image: 'ghcr.io/edgemesh-ts/edgemesh:0.1.0' }]
        }
      }
    })
  }
  if (pod.spec?.nodeName !== opts.nodeName || pod.spec?.serviceAccountName !== serviceAccount) {
    throw new Error(`agentToken: pod ${namespace}/${podName} exists on node ${pod.spec?.nodeName} as ${pod.spec?.serviceAccountName}, not on ${opts.nodeName} as ${serviceAccount}`)
  }
  const tr = await core.createNamespacedServiceAccountToken({
    name: serviceAccount,
    namespace,
    body: {
      spec: {
        audiences: [AUDIENCE],
        expirationSeconds: opts.expirationSeconds ?? 3600,
        boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: podName, uid: pod.metadata!.uid! }
      }
    }
  })
  const token = tr.status?.token
  if (token == null || token === '') throw new Error('TokenRequest returned no token')
  return token
}
