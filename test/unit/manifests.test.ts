// Unit tests for the deployment manifests (manifests/): the plain `kubectl apply` manifest's
// invariants, its embedded configs checked by the binaries' own schemas (AgentConfig,
// ServerConfig), its RBAC and peer-record policy, and the Helm chart's static files. The agent's
// node-local DNS and ClusterIP proxy wiring (agent.yaml's dns and proxy sections, the node's
// resolv.conf, xtables.lock and /lib/modules mounts, the capabilities) is also checked on the chart
// rendered with the real helm (`helm template`, the binary `npm run controlplane` provides),
// against the plain manifest. The chart/plain
// equivalence of the RBAC and what the apiserver makes of it are checked in
// test/e2e/k8s-rbac.test.ts.
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { tmpdir } from 'node:os'
import { dirname, join, posix } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse as parseYaml, parseAllDocuments } from 'yaml'
import { z } from 'zod'
import { AgentConfig, ServerConfig, loadConfig } from '../../shared/config.ts'
import { parsePeerId } from '../../shared/peer-id.ts'
import { preSharedKey } from '@libp2p/pnet'
import { renderChart } from '../controlplane/cluster.ts'

const execFileP = promisify(execFile)
const ROOT = new URL('../../', import.meta.url)
const PLAIN = new URL('manifests/plain/edgemesh.yaml', ROOT)
const CHART = new URL('manifests/helm/edgemesh/', ROOT)
const NAMESPACE = 'edgemesh'
const AGENT_USER = `system:serviceaccount:${NAMESPACE}:edgemesh-agent`
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'])
const RBAC_KINDS = new Set(['Role', 'ClusterRole', 'RoleBinding', 'ClusterRoleBinding'])
/** where the agent container sees the node's /etc/resolv.conf (AgentConfig dns.resolvConf) */
const HOST_RESOLV_CONF = '/host/etc/resolv.conf'
/** the node-local DNS the chart and the plain manifest configure (AgentConfig dns, defaults applied) */
const DNS = {
  listen: '169.254.96.16:53', device: 'edgemesh0', clusterDomain: 'cluster.local', resolvConf: HOST_RESOLV_CONF,
  ttlSeconds: 5, upstreamTimeoutMs: 1000, cacheEntries: 10000
}
/** the proxy section the chart renders with its defaults, and the plain manifest holds (every values.yaml key) */
const PROXY_YAML = {
  listen: '169.254.96.16', iptables: 'auto', directCidrs: [], minSyncIntervalMs: 250, resyncSeconds: 60,
  connectTimeoutMs: 3000, udpIdleSeconds: 10, udpStreamIdleSeconds: 180, destinationRules: true, cleanupOnExit: true
}
/** ... and as the agent sees it (AgentConfig proxy, defaults applied): on the DNS server's bridge */
const PROXY = { ...PROXY_YAML, device: 'edgemesh0', chainPrefix: 'EDGEMESH' }
/** the node's xtables lock (shared with kube-proxy and the CNI) and kernel modules, as the proxy mounts them */
const XTABLES_LOCK = '/run/xtables.lock'
const LIB_MODULES = '/lib/modules'
const PROXY_VOLUMES = ['xtables-lock', 'lib-modules']

type Obj = Record<string, any>

let plainText: string
let docs: Obj[]
let tmp: string

beforeAll(async () => {
  plainText = await readFile(PLAIN, 'utf8')
  const parsed = parseAllDocuments(plainText)
  if (!Array.isArray(parsed)) throw new Error('expected a multi-document stream')
  for (const d of parsed) {
    expect(d.errors, 'YAML errors').toEqual([])
    expect(d.warnings, 'YAML warnings').toEqual([])
  }
  docs = parsed.map((d) => d.toJS() as Obj | null).filter((d): d is Obj => d != null)
  tmp = await mkdtemp(join(tmpdir(), 'edgemesh-manifests-'))
})
afterAll(async () => { await rm(tmp, { recursive: true, force: true }) })

function find (kind: string, name: string, objs: Obj[] = docs): Obj {
  const found = objs.filter((d) => d.kind === kind && d.metadata?.name === name)
  expect(found, `${kind}/${name}`).toHaveLength(1)
  return found[0]!
}

function container (workload: Obj, name: string): Obj {
  const c = (workload.spec.template.spec.containers as Obj[]).find((x) => x.name === name)
  expect(c, `container ${name}`).toBeDefined()
  return c!
}

/** The volume mounted at exactly `mountPath` in the container. */
function volumeAt (workload: Obj, containerName: string, mountPath: string): Obj {
  const mount = (container(workload, containerName).volumeMounts as Obj[]).find((m) => m.mountPath === mountPath)
  expect(mount, `a volume mounted at ${mountPath}`).toBeDefined()
  const volume = (workload.spec.template.spec.volumes as Obj[]).find((v) => v.name === mount!.name)
  expect(volume, `volume ${mount!.name}`).toBeDefined()
  return volume!
}

/**
 * What the container sees at `path`: the ConfigMap key or Secret item a (projected) volume puts
 * there. Resolves the file the way the kubelet lays it out, so a config path that points at
 * nothing fails here rather than at pod start.
 */
function fileSource (workload: Obj, containerName: string, path: string, objs: Obj[] = docs): { kind: 'ConfigMap' | 'Secret', name: string, key: string, optional: boolean } {
  const volume = volumeAt(workload, containerName, posix.dirname(path))
  const file = posix.basename(path)
  const sources: Obj[] = volume.projected?.sources ?? [volume.configMap != null ? { configMap: volume.configMap } : { secret: { ...volume.secret, name: volume.secret?.secretName } }]
  for (const s of sources) {
    const ref = s.configMap ?? s.secret
    const kind = s.configMap != null ? 'ConfigMap' : 'Secret'
    if (ref.items == null) {
      if (kind === 'ConfigMap') {
        const cm = find('ConfigMap', ref.name, objs)
        if (cm.data?.[file] != null) return { kind, name: ref.name, key: file, optional: ref.optional === true }
      }
      continue
    }
    const item = (ref.items as Obj[]).find((i) => i.path === file)
    if (item != null) return { kind, name: ref.name, key: item.key, optional: ref.optional === true }
  }
  throw new Error(`nothing is mounted at ${path} in ${workload.kind}/${workload.metadata.name}`)
}

function configMapFile (workload: Obj, containerName: string, path: string, objs: Obj[] = docs): string {
  const src = fileSource(workload, containerName, path, objs)
  expect(src.kind).toBe('ConfigMap')
  return find('ConfigMap', src.name, objs).data[src.key] as string
}

function argAfter (args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag)
  return i < 0 ? undefined : args[i + 1]
}

function hostPathAt (workload: Obj, containerName: string, dir: string): string {
  const v = volumeAt(workload, containerName, dir)
  expect(v.hostPath, `${dir} is a hostPath volume`).toBeDefined()
  expect(v.hostPath.type).toBe('DirectoryOrCreate')
  return v.hostPath.path as string
}

/**
 * The node file a hostPath volume mounts at exactly `path` (read-only, type File), and that no
 * other mount of the container encloses it: the kubelet pre-creates mount points nested in a
 * configMap/secret/projected volume as directories, and a file cannot be mounted on one.
 */
function hostFileAt (workload: Obj, containerName: string, path: string): string {
  const mounts = container(workload, containerName).volumeMounts as Obj[]
  const mount = mounts.find((m) => m.mountPath === path)
  expect(mount, `a volume mounted at ${path}`).toBeDefined()
  expect(mount!.readOnly, `${path} is mounted read-only`).toBe(true)
  expect(mount!.subPath).toBeUndefined()
  for (const m of mounts) expect(path.startsWith(`${m.mountPath as string}/`), `${path} is nested in the mount at ${m.mountPath}`).toBe(false)
  const volume = (workload.spec.template.spec.volumes as Obj[]).find((v) => v.name === mount!.name)
  expect(volume?.hostPath, `${path} is a hostPath volume`).toBeDefined()
  expect(volume!.hostPath.type).toBe('File')
  return volume!.hostPath.path as string
}

/**
 * The proxy's host mounts in the agent container: the node's xtables lock at the same path
 * (hostPath FileOrCreate, writable: iptables takes the lock) and /lib/modules read-only.
 */
function expectProxyMounts (workload: Obj): void {
  const mounts = container(workload, 'agent').volumeMounts as Obj[]
  const volumes = workload.spec.template.spec.volumes as Obj[]
  const at = (path: string): { mount: Obj, volume: Obj } => {
    const mount = mounts.find((m) => m.mountPath === path)
    expect(mount, `a volume mounted at ${path}`).toBeDefined()
    expect(mount!.subPath).toBeUndefined()
    const volume = volumes.find((v) => v.name === mount!.name)
    expect(volume?.hostPath, `${path} is a hostPath volume`).toBeDefined()
    return { mount: mount!, volume: volume! }
  }
  const lock = at(XTABLES_LOCK)
  expect(lock.volume.hostPath).toEqual({ path: XTABLES_LOCK, type: 'FileOrCreate' })
  expect(lock.mount.readOnly ?? false, 'the xtables lock is writable').toBe(false)
  const modules = at(LIB_MODULES)
  expect(modules.volume.hostPath.path).toBe(LIB_MODULES)
  expect(modules.mount.readOnly, '/lib/modules is read-only').toBe(true)
  for (const m of mounts) expect(XTABLES_LOCK.startsWith(`${m.mountPath as string}/`), `${XTABLES_LOCK} is nested in the mount at ${m.mountPath}`).toBe(false)
  expect([lock.volume.name, modules.volume.name]).toEqual(PROXY_VOLUMES)
}

/** True when the agent DaemonSet has any of the proxy's volumes or mounts. */
function hasProxyMounts (workload: Obj): boolean {
  const paths = [XTABLES_LOCK, LIB_MODULES]
  return (workload.spec.template.spec.volumes as Obj[]).some((v) => PROXY_VOLUMES.includes(v.name) || paths.includes(v.hostPath?.path)) ||
    (container(workload, 'agent').volumeMounts as Obj[]).some((m) => PROXY_VOLUMES.includes(m.name) || paths.includes(m.mountPath))
}

const agentDs = (objs: Obj[] = docs): Obj => find('DaemonSet', 'edgemesh-agent', objs)
const serverDeploy = (): Obj => find('Deployment', 'edgemesh-server')
/** agent.yaml as the DaemonSet's --config flag finds it, in the plain manifest or a rendered chart */
const agentConfigText = (objs: Obj[] = docs): string => configMapFile(agentDs(objs), 'agent', argAfter(container(agentDs(objs), 'agent').args, '--config')!, objs)
const serverConfigText = (): string => configMapFile(serverDeploy(), 'server', argAfter(container(serverDeploy(), 'server').args, '--config')!)
const agentConfig = (objs: Obj[] = docs): AgentConfig => AgentConfig.parse({ ...parseYaml(agentConfigText(objs)), nodeName: 'edge-node-1' })
const serverConfig = (): ServerConfig => ServerConfig.parse(parseYaml(serverConfigText()))

describe('plain manifest: objects', () => {
  it('holds the namespace, both workloads and their config, service, accounts, the agents\' RBAC and the peer-record policy', () => {
    const names = docs.map((d) => `${d.kind}/${d.metadata.name}`).sort()
    expect(names).toEqual([
      'ClusterRole/edgemesh-agent', 'ClusterRoleBinding/edgemesh-agent',
      'ConfigMap/edgemesh-agent', 'ConfigMap/edgemesh-server', 'DaemonSet/edgemesh-agent', 'Deployment/edgemesh-server',
      'Namespace/edgemesh', 'Role/edgemesh-agent', 'RoleBinding/edgemesh-agent',
      'Service/edgemesh-server', 'ServiceAccount/edgemesh-agent', 'ServiceAccount/edgemesh-server',
      'ValidatingAdmissionPolicy/edgemesh-agent-peer-record', 'ValidatingAdmissionPolicyBinding/edgemesh-agent-peer-record'
    ])
  })

  it('puts every namespaced object in the edgemesh namespace, with app.kubernetes.io labels', () => {
    for (const d of docs) {
      expect(typeof d.apiVersion).toBe('string')
      if (CLUSTER_SCOPED.has(d.kind)) expect(d.metadata.namespace, `${d.kind}/${d.metadata.name}`).toBeUndefined()
      else expect(d.metadata.namespace, `${d.kind}/${d.metadata.name}`).toBe(NAMESPACE)
      expect(d.metadata.labels['app.kubernetes.io/name']).toBe('edgemesh')
      expect(d.metadata.labels['app.kubernetes.io/part-of']).toBe('edgemesh')
    }
  })

  it('workload selectors match their pod labels, and the Service selects the relay pods', () => {
    for (const w of [agentDs(), serverDeploy()]) {
      const podLabels = w.spec.template.metadata.labels
      for (const [k, v] of Object.entries(w.spec.selector.matchLabels)) expect(podLabels[k], k).toBe(v)
      expect(podLabels['app.kubernetes.io/component']).toBe(w.kind === 'DaemonSet' ? 'agent' : 'server')
    }
    const svc = find('Service', 'edgemesh-server')
    const serverPod = serverDeploy().spec.template.metadata.labels
    for (const [k, v] of Object.entries(svc.spec.selector)) expect(serverPod[k], k).toBe(v)
    const agentPod = agentDs().spec.template.metadata.labels
    expect(Object.entries(svc.spec.selector).every(([k, v]) => agentPod[k] === v), 'the Service must not select agents').toBe(false)
  })

  it('runs both with their own ServiceAccount; only the agent pod mounts an API token', () => {
    const agent = agentDs().spec.template.spec
    const server = serverDeploy().spec.template.spec
    expect(agent.serviceAccountName).toBe('edgemesh-agent')
    expect(server.serviceAccountName).toBe('edgemesh-server')
    // the agents' in-cluster config: the kubelet-projected, pod-bound token
    expect(agent.automountServiceAccountToken).toBe(true)
    // the relay never uses the API
    expect(server.automountServiceAccountToken).toBe(false)
    // neither account hands a token to pods that do not ask for one
    for (const sa of ['edgemesh-agent', 'edgemesh-server']) expect(find('ServiceAccount', sa).automountServiceAccountToken, sa).toBe(false)
  })

  it('names container ports validly (IANA service names: <= 15 chars) and uniquely', () => {
    for (const w of [agentDs(), serverDeploy()]) {
      for (const c of w.spec.template.spec.containers as Obj[]) {
        const names = (c.ports as Obj[]).map((p) => p.name as string)
        expect(new Set(names).size).toBe(names.length)
        for (const n of names) expect(n).toMatch(/^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/)
      }
    }
  })
})

describe('plain manifest: agent DaemonSet', () => {
  it('uses the host network with cluster DNS', () => {
    const spec = agentDs().spec.template.spec
    expect(spec.hostNetwork).toBe(true)
    expect(spec.dnsPolicy).toBe('ClusterFirstWithHostNet')
  })

  it('has NET_ADMIN, NET_RAW (the proxy\'s iptables) and NET_BIND_SERVICE (DNS on port 53) and nothing else added', () => {
    const sc = container(agentDs(), 'agent').securityContext
    expect([...sc.capabilities.add].sort()).toEqual(['NET_ADMIN', 'NET_BIND_SERVICE', 'NET_RAW'])
    expect(sc.capabilities.drop).toEqual(['ALL'])
    expect(sc.privileged ?? false).toBe(false)
  })

  it('takes the node name from spec.nodeName and passes it as --set nodeName=$(NODE_NAME)', () => {
    const c = container(agentDs(), 'agent')
    const env = (c.env as Obj[]).find((e) => e.name === 'NODE_NAME')
    expect(env?.valueFrom?.fieldRef?.fieldPath).toBe('spec.nodeName')
    // freed traffic buffers go back to the OS (bin/edgemesh-agent.js, test/e2e/proxy-memory.test.ts)
    expect((c.env as Obj[]).find((e) => e.name === 'GLIBC_TUNABLES')?.value).toBe('glibc.malloc.mmap_threshold=16384')
    expect(c.command).toEqual(['node'])
    expect(c.args.slice(0, 3)).toEqual(['--max-semi-space-size=2', '--expose-gc', 'bin/edgemesh-agent.js'])
    expect(argAfter(c.args, '--config')).toBe('/etc/edgemesh/agent.yaml')
    expect(argAfter(c.args, '--set')).toBe('nodeName=$(NODE_NAME)')
  })

  it('keeps the node key in hostPath /var/lib/edgemesh and the control socket in hostPath /run/edgemesh', () => {
    const cfg = agentConfig()
    expect(hostPathAt(agentDs(), 'agent', dirname(cfg.identityFile))).toBe('/var/lib/edgemesh')
    expect(hostPathAt(agentDs(), 'agent', dirname(cfg.controlSocket))).toBe('/run/edgemesh')
    expect(cfg.identityFile).toBe('/var/lib/edgemesh/agent.key')
    expect(cfg.controlSocket).toBe('/run/edgemesh/agent.sock')
  })

  it('tolerates every taint, so edge nodes run an agent too', () => {
    expect(agentDs().spec.template.spec.tolerations).toContainEqual({ operator: 'Exists' })
  })

  it('limits memory to 256Mi and requests CPU and memory', () => {
    const r = container(agentDs(), 'agent').resources
    expect(r.limits.memory).toBe('256Mi')
    expect(r.requests.cpu).toBeDefined()
    expect(r.requests.memory).toBeDefined()
  })

  it('probes the agent\'s probe listener on the node\'s loopback: /healthz live, /readyz ready', () => {
    const c = container(agentDs(), 'agent')
    // agent.yaml's health address is the port the probes name, on 127.0.0.1 (the pod uses the node's network)
    const health = agentConfig().health as string
    expect(health).toMatch(/^127\.0\.0\.1:\d+$/)
    expect(c.ports).toContainEqual({ name: 'health', containerPort: Number(health.split(':')[1]), protocol: 'TCP' })
    const paths = { startupProbe: '/healthz', livenessProbe: '/healthz', readinessProbe: '/readyz' }
    for (const [probe, path] of Object.entries(paths)) {
      expect(c[probe]?.httpGet, probe).toEqual({ host: '127.0.0.1', path, port: 'health' })
    }
  })

  it('declares the tunnel ports agent.yaml listens on', () => {
    const cfg = agentConfig()
    const ports = container(agentDs(), 'agent').ports as Obj[]
    expect(ports).toContainEqual({ name: 'tunnel-udp', containerPort: cfg.listen.udpPort, protocol: 'UDP' })
    expect(ports).toContainEqual({ name: 'tunnel-tcp', containerPort: cfg.listen.tcpPort, protocol: 'TCP' })
  })

  it('gives the ClusterIP proxy the host network, the node\'s xtables lock and /lib/modules', () => {
    expect(agentDs().spec.template.spec.hostNetwork).toBe(true)
    expectProxyMounts(agentDs())
  })
})

describe('plain manifest: agent.yaml', () => {
  it('agent.yaml leaves nodeName to the flag and validates against AgentConfig once it is set', () => {
    const raw = parseYaml(agentConfigText())
    expect(raw.nodeName).toBeUndefined()
    expect(AgentConfig.safeParse(raw).success).toBe(false)
    const parsed = AgentConfig.safeParse({ ...raw, nodeName: 'edge-node-1' })
    expect(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues)).toBe(true)
  })

  it('loads the way the binary loads it: --config FILE --set nodeName=...', async () => {
    const file = join(tmp, 'agent.yaml')
    await writeFile(file, agentConfigText())
    const cfg = await loadConfig(AgentConfig, { file, overrides: [['nodeName', 'edge-node-1']] })
    expect(cfg.nodeName).toBe('edge-node-1')
  })

  it('points at the relay the server announces, on the server ports, with a valid relay peer id', () => {
    const agent = agentConfig()
    const server = serverConfig()
    expect(agent.relays.length).toBeGreaterThanOrEqual(1)
    for (const [i, r] of agent.relays.entries()) {
      parsePeerId(r.peerId, `relays[${i}].peerId`)
      expect(server.announce).toContain(r.host)
      expect(r.tcpPort).toBe(server.listen.tcpPort)
      expect(r.udpPort).toBe(server.listen.udpPort)
    }
  })

  it('uses the Kubernetes API in-cluster (no kubeconfig), with peer records in the mesh namespace and no static peers file', () => {
    const raw = parseYaml(agentConfigText())
    expect(raw.kubernetes).toEqual({ namespace: NAMESPACE, snapshotFile: '/var/lib/edgemesh/catalog.json' })
    expect(raw.peersFile).toBeUndefined()
    expect(find('ConfigMap', 'edgemesh-agent').data['peers.yaml']).toBeUndefined()
    const k = agentConfig().kubernetes!
    expect(k.kubeconfig).toBeUndefined()
    expect(k.leaseDurationSeconds).toBe(40)
    // the Role and the policy cover the namespace the agents write their records in
    expect(find('Role', 'edgemesh-agent').metadata.namespace).toBe(k.namespace)
    expect(find('ValidatingAdmissionPolicy', 'edgemesh-agent-peer-record').spec.matchConstraints.namespaceSelector)
      .toEqual({ matchLabels: { 'kubernetes.io/metadata.name': k.namespace } })
  })

  it('the catalog snapshot lands in the writable hostPath next to the node key', () => {
    const cfg = agentConfig()
    const dir = dirname(cfg.kubernetes!.snapshotFile)
    expect(dir).toBe(dirname(cfg.identityFile))
    expect(hostPathAt(agentDs(), 'agent', dir)).toBe('/var/lib/edgemesh')
    const mount = (container(agentDs(), 'agent').volumeMounts as Obj[]).find((m) => m.mountPath === dir)!
    expect(mount.readOnly ?? false).toBe(false)
    expect(container(agentDs(), 'agent').securityContext.readOnlyRootFilesystem).toBe(true)
  })

  it('the config ConfigMap is mounted as a directory (no subPath) so edits reach running agents', () => {
    for (const m of container(agentDs(), 'agent').volumeMounts as Obj[]) expect(m.subPath).toBeUndefined()
  })

  it('serves node-local DNS on 169.254.96.16:53, forwarding to the resolvers of the node\'s resolv.conf', () => {
    const raw = parseYaml(agentConfigText())
    expect(raw.dns).toEqual({ listen: '169.254.96.16:53', clusterDomain: 'cluster.local', resolvConf: HOST_RESOLV_CONF })
    expect(agentConfig().dns).toEqual(DNS)
    // the NODE's file, not the pod's (dnsPolicy ClusterFirstWithHostNet points that one at cluster DNS)
    expect(hostFileAt(agentDs(), 'agent', agentConfig().dns!.resolvConf)).toBe('/etc/resolv.conf')
  })

  it('runs the ClusterIP proxy on the DNS server\'s bridge and address, with every field written out', () => {
    const raw = parseYaml(agentConfigText())
    expect(raw.proxy).toEqual(PROXY_YAML)
    const cfg = agentConfig()
    expect(cfg.proxy).toEqual(PROXY)
    expect(cfg.kubernetes, 'the proxy needs the catalog').toBeDefined()
    expect(cfg.proxy!.device).toBe(cfg.dns!.device)
    expect(cfg.dns!.listen.startsWith(`${cfg.proxy!.listen}:`)).toBe(true)
  })

  it('setting upstreams is uncommenting them: IPv4:port the schema accepts', () => {
    const text = agentConfigText()
    expect(text).toContain('# upstreams: [10.0.0.2:53]')
    const parsed = AgentConfig.safeParse({ ...parseYaml(text.replace('# upstreams:', 'upstreams:')), nodeName: 'edge-node-1' })
    expect(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues)).toBe(true)
    expect(parsed.data!.dns!.upstreams).toEqual(['10.0.0.2:53'])
  })
})

describe('plain manifest: relay Deployment, Service and server.yaml', () => {
  it('server.yaml validates against ServerConfig and announces a public address', () => {
    const parsed = ServerConfig.safeParse(parseYaml(serverConfigText()))
    expect(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues)).toBe(true)
    expect(parsed.data!.announce.length).toBeGreaterThanOrEqual(1)
    for (const a of parsed.data!.announce) expect(a).toMatch(/^\d{1,3}(\.\d{1,3}){3}$/)
  })

  it('runs one relay on the host network, recreated (host ports) and pinned to a node', () => {
    const d = serverDeploy()
    expect(d.spec.replicas).toBe(1)
    expect(d.spec.strategy.type).toBe('Recreate')
    expect(d.spec.template.spec.hostNetwork).toBe(true)
    expect(d.spec.template.spec.dnsPolicy).toBe('ClusterFirstWithHostNet')
    expect(Object.keys(d.spec.template.spec.nodeSelector ?? {})).not.toHaveLength(0)
    const c = container(d, 'server')
    expect(c.command).toEqual(['node'])
    expect(c.args).toEqual(['--max-semi-space-size=2', '--heap-growing-percent=25', 'bin/edgemesh-server.js', '--config', '/etc/edgemesh/server.yaml'])
    expect(c.securityContext.capabilities.drop).toEqual(['ALL'])
    expect(c.securityContext.capabilities.add).toBeUndefined()
  })

  it('keeps the relay key in hostPath /var/lib/edgemesh', () => {
    const cfg = serverConfig()
    expect(cfg.identityFile).toBe('/var/lib/edgemesh/server.key')
    expect(hostPathAt(serverDeploy(), 'server', dirname(cfg.identityFile))).toBe('/var/lib/edgemesh')
  })

  it('declares and serves the ports server.yaml listens on: UDP 4002, TCP 4001, HTTP 9090', () => {
    const cfg = serverConfig()
    const httpPort = Number(cfg.listen.http.split(':').at(-1))
    expect([cfg.listen.udpPort, cfg.listen.tcpPort, httpPort]).toEqual([4002, 4001, 9090])
    const ports = container(serverDeploy(), 'server').ports as Obj[]
    expect(ports).toContainEqual({ name: 'relay-udp', containerPort: cfg.listen.udpPort, protocol: 'UDP' })
    expect(ports).toContainEqual({ name: 'relay-tcp', containerPort: cfg.listen.tcpPort, protocol: 'TCP' })
    expect(ports).toContainEqual({ name: 'http', containerPort: httpPort, protocol: 'TCP' })
    const svc = find('Service', 'edgemesh-server')
    expect(svc.spec.type).toBe('ClusterIP')
    const svcPorts = (svc.spec.ports as Obj[]).map((p) => `${p.protocol}/${p.port}->${p.targetPort}`).sort()
    expect(svcPorts).toEqual(['TCP/4001->relay-tcp', 'TCP/9090->http', 'UDP/4002->relay-udp'])
    expect(container(serverDeploy(), 'server').livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' })
    expect(container(serverDeploy(), 'server').readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' })
  })
})

describe('plain manifest: API permissions', () => {
  type Rule = { apiGroups: string[], resources: string[], verbs: string[], resourceNames?: string[] }
  const flat = (rules: Rule[]): string[] => rules.flatMap((r) => {
    expect(r.resourceNames, 'no resourceNames').toBeUndefined()
    return r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}`)))
  }).sort()
  const read = ['get', 'list', 'watch']

  it('agent ClusterRole: read services, endpointslices and destinationrules, get (only) nodes; nothing else cluster-wide', () => {
    expect(flat(find('ClusterRole', 'edgemesh-agent').rules)).toEqual([
      '/nodes:get', ...read.map((v) => `/services:${v}`), ...read.map((v) => `discovery.k8s.io/endpointslices:${v}`),
      ...read.map((v) => `networking.istio.io/destinationrules:${v}`)
    ].sort())
  })

  it('agent Role (mesh namespace): leases get/list/watch/create/update/patch, no delete', () => {
    const role = find('Role', 'edgemesh-agent')
    expect(role.metadata.namespace).toBe(NAMESPACE)
    expect(flat(role.rules)).toEqual([...read, 'create', 'update', 'patch'].map((v) => `coordination.k8s.io/leases:${v}`).sort())
  })

  it('the bindings give those roles to the agent ServiceAccount only; nothing is bound to the relay', () => {
    for (const [kind, roleKind] of [['ClusterRoleBinding', 'ClusterRole'], ['RoleBinding', 'Role']] as const) {
      const b = find(kind, 'edgemesh-agent')
      expect(b.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: roleKind, name: 'edgemesh-agent' })
      expect(b.subjects).toEqual([{ kind: 'ServiceAccount', name: 'edgemesh-agent', namespace: NAMESPACE }])
    }
    expect(docs.filter((d) => RBAC_KINDS.has(d.kind)).map((d) => `${d.kind}/${d.metadata.name}`).sort())
      .toEqual(['ClusterRole/edgemesh-agent', 'ClusterRoleBinding/edgemesh-agent', 'Role/edgemesh-agent', 'RoleBinding/edgemesh-agent'])
    for (const d of docs.filter((x) => x.kind.endsWith('Binding') && RBAC_KINDS.has(x.kind))) {
      expect((d.subjects as Obj[]).some((sub) => sub.name === 'edgemesh-server'), `${d.kind}/${d.metadata.name}`).toBe(false)
    }
  })

  it('the peer-record policy: agent Lease writes in the mesh namespace, the name must be the token\'s node-name claim, the owner its Node', () => {
    const vap = find('ValidatingAdmissionPolicy', 'edgemesh-agent-peer-record')
    expect(vap.apiVersion).toBe('admissionregistration.k8s.io/v1')
    expect(vap.spec.failurePolicy).toBe('Fail')
    expect(vap.spec.matchConstraints.resourceRules).toEqual([
      { apiGroups: ['coordination.k8s.io'], apiVersions: ['*'], operations: ['CREATE', 'UPDATE', 'DELETE'], resources: ['leases'] }
    ])
    expect(vap.spec.matchConditions).toEqual([{ name: 'edgemesh-agent', expression: `request.userInfo.username == '${AGENT_USER}'` }])
    const claim = "request.userInfo.extra['authentication.kubernetes.io/node-name']"
    expect(vap.spec.variables).toHaveLength(1)
    expect(vap.spec.variables[0].name).toBe('nodeName')
    expect(vap.spec.variables[0].expression).toContain(`${claim}[0]`)
    // a token without the claim yields '' and is denied
    expect(vap.spec.variables[0].expression).toMatch(/: ''$/)
    expect(vap.spec.validations).toHaveLength(2)
    const v = vap.spec.validations[0]
    expect(v.expression).toBe("variables.nodeName != '' && request.name == variables.nodeName")
    expect(v.reason).toBe('Forbidden')
    expect(v.messageExpression).toContain("'edgemesh-agent on node ' + variables.nodeName + ' may only write the peer record named ' + variables.nodeName")
    expect(v.messageExpression).not.toMatch(/\n/)
    // the record's owner (the garbage collector deletes it with that Node) may only be its own Node
    const owner = vap.spec.validations[1]
    expect(owner.expression).toBe("request.operation == 'DELETE' || !has(object.metadata.ownerReferences) || object.metadata.ownerReferences.all(r, r.apiVersion == 'v1' && r.kind == 'Node' && r.name == variables.nodeName)")
    expect(owner.reason).toBe('Forbidden')
    expect(owner.messageExpression).toBe("'edgemesh-agent on node ' + variables.nodeName + ' may only name its own Node ' + variables.nodeName + ' as the owner of its peer record'")
    const binding = find('ValidatingAdmissionPolicyBinding', 'edgemesh-agent-peer-record')
    expect(binding.apiVersion).toBe('admissionregistration.k8s.io/v1')
    expect(binding.spec).toEqual({ policyName: 'edgemesh-agent-peer-record', validationActions: ['Deny'] })
  })
})

describe('plain manifest: CHANGE ME markers and the PSK', () => {
  it('marks the relay IP, the relay node and the relay peer id with CHANGE ME', () => {
    const relayPeerId = agentConfig().relays[0]!.peerId
    const relayIp = serverConfig().announce[0]!
    const lines = plainText.split('\n').filter((l) => !l.trimStart().startsWith('#'))
    const marked = (needle: string): void => {
      const hits = lines.filter((l) => l.includes(needle))
      expect(hits.length, needle).toBeGreaterThan(0)
      for (const l of hits) expect(l, `line with ${needle}`).toContain('# CHANGE ME')
    }
    marked(relayIp)
    marked(relayPeerId)
    marked('kubernetes.io/hostname:')
  })

  it('the PSK is on: pskFile in both configs resolves to the required Secret edgemesh-psk', () => {
    for (const [w, name, text] of [[agentDs(), 'agent', agentConfigText()], [serverDeploy(), 'server', serverConfigText()]] as const) {
      const cfg = parseYaml(text)
      const parsed = name === 'agent' ? AgentConfig.safeParse({ ...cfg, nodeName: 'edge-node-1' }) : ServerConfig.safeParse(cfg)
      expect(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues)).toBe(true)
      expect(cfg.pskFile).toBe('/etc/edgemesh/swarm.key')
      expect(fileSource(w, name, cfg.pskFile)).toEqual({ kind: 'Secret', name: 'edgemesh-psk', key: 'swarm.key', optional: false })
    }
  })

  it('the header\'s commands create that Secret with a swarm.key @libp2p/pnet accepts', async () => {
    const header = plainText.slice(plainText.indexOf('# Before applying, create the mesh\'s pre-shared key'), plainText.indexOf('# Then edit every line marked CHANGE ME'))
    const commands = header.split('\n').filter((l) => /^#\s+(printf|kubectl) /.test(l)).map((l) => l.replace(/^#\s+/, ''))
    expect(commands).toEqual([
      'kubectl create namespace edgemesh',
      'printf \'/key/swarm/psk/1.0.0/\\n/base16/\\n%s\' "$(openssl rand -hex 32)" > swarm.key',
      'kubectl -n edgemesh create secret generic edgemesh-psk --from-file=swarm.key'
    ])
    // run the generating command as written
    const { stdout } = await execFileP('bash', ['-c', `cd ${tmp} && ${commands[1]} && cat swarm.key`])
    expect(stdout).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/)
    const protector = preSharedKey({ psk: new TextEncoder().encode(stdout) })() as unknown as { psk: Uint8Array, tag: string }
    expect(Buffer.from(protector.psk).toString('hex')).toBe(stdout.slice(-64))
    expect(protector.tag).toBe('/key/swarm/psk/1.0.0/')
  })
})

describe('helm chart', () => {
  const chartFile = async (path: string): Promise<string> => await readFile(new URL(path, CHART), 'utf8')
  let values: Obj
  let schema: Obj
  let validate: z.ZodType
  beforeAll(async () => {
    values = parseYaml(await chartFile('values.yaml'))
    schema = JSON.parse(await chartFile('values.schema.json'))
    validate = z.fromJSONSchema(schema as any)
  })
  const withValues = (edit: (v: Obj) => void): Obj => { const v = structuredClone(values); edit(v); return v }
  const announced = (v: Obj): void => { v.relay.announce = ['203.0.113.10'] }
  const RELAY = { host: '203.0.113.10', peerId: '12D3KooWPgHATvH9wN3n43y2TgqGQabmPTxmEDX3rUHkRqLbuZAT' }

  it('Chart.yaml: apiVersion v2, edgemesh 0.1.0, appVersion 0.1.0, Kubernetes >= 1.26', async () => {
    const chart = parseYaml(await chartFile('Chart.yaml'))
    expect(chart).toMatchObject({ apiVersion: 'v2', name: 'edgemesh', version: '0.1.0', appVersion: '0.1.0', kubeVersion: '>=1.26.0-0', type: 'application' })
    expect(chart.description.length).toBeGreaterThan(20)
  })

  it('values.yaml: both halves on, no announce by default, the agent defaults the brief asks for', () => {
    expect(values.server.enabled).toBe(true)
    expect(values.agent.enabled).toBe(true)
    expect(values.relay.announce).toEqual([])
    expect(values.relay.ports).toEqual({ tcp: 4001, udp: 4002 })
    expect(values.image).toEqual({ repository: 'ghcr.io/edgemesh-ts/edgemesh', tag: '', pullPolicy: 'IfNotPresent' })
    expect(values.server.replicas).toBe(1)
    expect(values.server.persistence.type).toBe('hostPath')
    expect(values.server.persistence.hostPath.path).toBe('/var/lib/edgemesh')
    expect(values.server.service.type).toBe('ClusterIP')
    expect(values.agent.resources.limits.memory).toBe('256Mi')
    expect(values.agent.tolerations).toContainEqual({ operator: 'Exists' })
    expect(values.agent.hostPaths).toEqual({ data: '/var/lib/edgemesh', run: '/run/edgemesh' })
    // the capabilities come with the features (the template adds them): NET_ADMIN and NET_RAW with
    // agent.proxy, NET_ADMIN and NET_BIND_SERVICE with agent.dns
    expect(values.agent.securityContext.capabilities.add).toEqual([])
    expect(values.agent.dns).toEqual({ enabled: true, listen: '169.254.96.16:53', clusterDomain: 'cluster.local', upstreams: [] })
    // enabled unset: it follows agent.kubernetes.enabled
    expect(values.agent.proxy).toEqual({ enabled: null, ...PROXY_YAML })
    expect(values.agent.peers).toEqual([])
    expect(values.agent.kubernetes).toEqual({ enabled: true, apiServer: '' })
    expect(values.psk).toEqual({ enabled: true, key: '', existingSecret: '', secretKey: 'swarm.key' })
  })

  it('values.yaml agrees with the plain manifest on probes, resources and security contexts', () => {
    const agent = container(agentDs(), 'agent')
    const server = container(serverDeploy(), 'server')
    for (const p of ['startupProbe', 'livenessProbe', 'readinessProbe']) expect(values.agent[p], p).toEqual(agent[p])
    for (const p of ['livenessProbe', 'readinessProbe']) expect(values.server[p], p).toEqual(server[p])
    expect(values.agent.resources).toEqual(agent.resources)
    expect(values.server.resources).toEqual(server.resources)
    // the plain manifest has the proxy and DNS on: values.yaml's capabilities plus theirs, as the chart renders them
    const withFeatures = structuredClone(values.agent.securityContext)
    withFeatures.capabilities.add.push('NET_ADMIN', 'NET_RAW', 'NET_BIND_SERVICE')
    expect(agent.securityContext).toEqual(withFeatures)
    expect(values.server.securityContext).toEqual(server.securityContext)
    expect(values.agent.tunnel).toEqual(parseYaml(agentConfigText()).tunnel)
  })

  it('values.schema.json is valid JSON Schema draft-07 and covers every key of values.yaml', () => {
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#')
    const uncovered: string[] = []
    const walk = (v: Obj, s: Obj, path: string): void => {
      for (const [k, child] of Object.entries(v)) {
        let sub = s.properties?.[k]
        if (sub?.$ref != null) sub = schema.definitions[sub.$ref.replace('#/definitions/', '')]
        if (sub == null) { uncovered.push(`${path}${k}`); continue }
        if (child != null && typeof child === 'object' && !Array.isArray(child) && sub.properties != null) walk(child, sub, `${path}${k}.`)
      }
    }
    walk(values, schema, '')
    expect(uncovered).toEqual([])
  })

  it('values.schema.json accepts the defaults plus an announce address, and edge-only installs without one', () => {
    expect(validate.safeParse(withValues(announced)).success).toBe(true)
    expect(validate.safeParse(withValues((v) => { v.server.enabled = false; v.agent.relays = [RELAY] })).success).toBe(true)
    expect(validate.safeParse(withValues((v) => { announced(v); v.relay.peerId = RELAY.peerId; v.agent.peers = [{ name: 'edge-node-1', peerId: RELAY.peerId }] })).success).toBe(true)
  })

  it('values.schema.json requires relay.announce while server.enabled', () => {
    expect(validate.safeParse(values).success).toBe(false)
    expect(validate.safeParse(withValues((v) => { v.relay.announce = ['relay.example.com'] })).success).toBe(false)
  })

  it('values.schema.json requires host and peerId on every relay and rejects unknown relay keys', () => {
    const relays = (r: Obj[]): boolean => validate.safeParse(withValues((v) => { announced(v); v.agent.relays = r })).success
    expect(relays([RELAY])).toBe(true)
    expect(relays([{ ...RELAY, tcpPort: 4001, udpPort: 4002 }])).toBe(true)
    expect(relays([{ host: RELAY.host }])).toBe(false)
    expect(relays([{ peerId: RELAY.peerId }])).toBe(false)
    expect(relays([{ ...RELAY, peerId: 'not-a-peer-id' }])).toBe(false)
    expect(relays([{ ...RELAY, port: 4002 }])).toBe(false)
  })

  it('values.schema.json requires ports to be integers in 1..65535', () => {
    const port = (p: unknown): boolean => validate.safeParse(withValues((v) => { announced(v); v.relay.ports.udp = p })).success
    expect(port(4002)).toBe(true)
    expect(port(1)).toBe(true)
    expect(port(65535)).toBe(true)
    expect(port(0)).toBe(false)
    expect(port(65536)).toBe(false)
    expect(port(4002.5)).toBe(false)
    expect(port('4002')).toBe(false)
    expect(validate.safeParse(withValues((v) => { announced(v); v.agent.listen.udpPort = 70000 })).success).toBe(false)
    expect(validate.safeParse(withValues((v) => { announced(v); v.agent.relays = [{ ...RELAY, udpPort: 0 }] })).success).toBe(false)
  })

  it('values.schema.json: agent.dns takes enabled, an IPv4:port listen address, a domain and IPv4:port upstreams, nothing else', () => {
    const dns = (d: Obj): boolean => validate.safeParse(withValues((v) => { announced(v); Object.assign(v.agent.dns, d) })).success
    expect(dns({})).toBe(true)
    expect(dns({ enabled: false })).toBe(true)
    expect(dns({ upstreams: ['10.0.0.2:53', '192.168.1.1:5353'] })).toBe(true)
    expect(dns({ listen: '169.254.20.10:53', clusterDomain: 'edge.example' })).toBe(true)
    expect(dns({ enabled: 'yes' })).toBe(false)
    expect(dns({ listen: '169.254.96.16' })).toBe(false)
    expect(dns({ listen: '169.254.96.16:0' })).toBe(false)
    expect(dns({ upstreams: ['10.0.0.2'] })).toBe(false)
    expect(dns({ upstreams: ['dns.google:53'] })).toBe(false)
    expect(dns({ upstreams: '10.0.0.2:53' })).toBe(false)
    expect(dns({ clusterDomain: 'Cluster.Local' })).toBe(false)
    expect(dns({ resolvConf: '/etc/resolv.conf' })).toBe(false)
  })

  it('values.schema.json: agent.proxy takes enabled (or null), an IPv4 listen address, a backend, IPv4 CIDRs and the agent\'s ranges, nothing else', () => {
    const proxy = (d: Obj): boolean => validate.safeParse(withValues((v) => { announced(v); Object.assign(v.agent.proxy, d) })).success
    expect(proxy({})).toBe(true)
    for (const enabled of [true, false, null]) expect(proxy({ enabled }), String(enabled)).toBe(true)
    expect(proxy({ enabled: 'yes' })).toBe(false)
    expect(proxy({ listen: '169.254.20.10' })).toBe(true)
    expect(proxy({ listen: '169.254.96.16:80' })).toBe(false)
    for (const iptables of ['auto', 'nft', 'legacy']) expect(proxy({ iptables }), iptables).toBe(true)
    expect(proxy({ iptables: 'nftables' })).toBe(false)
    expect(proxy({ directCidrs: ['10.244.0.0/16', '192.168.1.0/24', '10.0.0.7/32'] })).toBe(true)
    expect(proxy({ directCidrs: ['10.244.0.0'] })).toBe(false)
    expect(proxy({ directCidrs: ['10.244.0.0/33'] })).toBe(false)
    expect(proxy({ directCidrs: ['fd00::/8'] })).toBe(false)
    expect(proxy({ directCidrs: '10.244.0.0/16' })).toBe(false)
    expect(proxy({ minSyncIntervalMs: 0, resyncSeconds: 5, connectTimeoutMs: 100, udpIdleSeconds: 1, udpStreamIdleSeconds: 86400 })).toBe(true)
    expect(proxy({ resyncSeconds: 4 })).toBe(false)
    expect(proxy({ connectTimeoutMs: 60001 })).toBe(false)
    expect(proxy({ udpIdleSeconds: 1.5 })).toBe(false)
    expect(proxy({ destinationRules: false, cleanupOnExit: false })).toBe(true)
    expect(proxy({ cleanupOnExit: 'no' })).toBe(false)
    expect(proxy({ chainPrefix: 'EDGEMESH' })).toBe(false)
    // values the chart renders must be values the agent accepts: the schema's bounds are AgentConfig's
    const agentAccepts = (p: Obj): boolean => AgentConfig.safeParse({ nodeName: 'n', relays: [RELAY], kubernetes: {}, proxy: p }).success
    expect(agentAccepts(PROXY_YAML)).toBe(true)
    expect(agentAccepts({ ...PROXY_YAML, resyncSeconds: 4 })).toBe(false)
    expect(agentAccepts({ ...PROXY_YAML, connectTimeoutMs: 60001 })).toBe(false)
  })

  it('values.schema.json: agent.kubernetes.enabled is a boolean and the only key there', () => {
    const k = (kube: unknown): boolean => validate.safeParse(withValues((v) => { announced(v); v.agent.kubernetes = kube })).success
    expect(k({ enabled: true })).toBe(true)
    expect(k({ enabled: false })).toBe(true)
    expect(k({ enabled: 'yes' })).toBe(false)
    expect(k({ enabled: true, namespace: 'x' })).toBe(false)
  })

  it('templates: RBAC and the policy only in Kubernetes mode, the policy refuses clusters older than 1.30', async () => {
    const dir = new URL('templates/', CHART)
    const gate = '{{- if include "edgemesh.agent.kubernetes.enabled" . }}'
    for (const f of ['agent-rbac.yaml', 'agent-peer-record-policy.yaml']) expect(await readFile(new URL(f, dir), 'utf8'), f).toContain(gate)
    expect(await readFile(new URL('agent-peer-record-policy.yaml', dir), 'utf8')).toContain('semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version')
    const helpers = await readFile(new URL('_helpers.tpl', dir), 'utf8')
    // values reused from a release that predates the switch default to Kubernetes mode
    expect(helpers).toContain('dig "kubernetes" "enabled" true .Values.agent')
    // ... and the proxy to on in Kubernetes mode
    expect(helpers).toContain('dig "proxy" "enabled" nil .Values.agent')
  })

  it('values.schema.json: psk.key is optional (a random one by default) and 64 hex when given; psk.enabled is a boolean; nothing else', () => {
    const psk = (p: Obj): boolean => validate.safeParse(withValues((v) => { announced(v); Object.assign(v.psk, p) })).success
    expect(psk({})).toBe(true)
    expect(psk({ key: 'ab'.repeat(32) })).toBe(true)
    expect(psk({ key: 'ab'.repeat(31) })).toBe(false)
    expect(psk({ key: 'xy'.repeat(32) })).toBe(false)
    expect(psk({ existingSecret: 'edgemesh-psk' })).toBe(true)
    expect(psk({ enabled: false })).toBe(true)
    expect(psk({ enabled: 'no' })).toBe(false)
    expect(psk({ keyFile: 'x' })).toBe(false)
    // values reused from a release made before the default PSK still validate (create is ignored)
    expect(psk({ create: false })).toBe(true)
  })

  it('has the templates, each include naming a defined helper', async () => {
    const dir = new URL('templates/', CHART)
    // templates/tests/ holds the helm test pods (and their own _pod.tpl helper)
    const files = (await readdir(dir, { recursive: true })).filter((f) => /\.(ya?ml|tpl|txt)$/.test(f)).sort()
    for (const f of ['NOTES.txt', '_helpers.tpl', 'agent-configmap.yaml', 'agent-daemonset.yaml', 'agent-peer-record-policy.yaml', 'agent-rbac.yaml', 'psk-secret.yaml',
      'server-configmap.yaml', 'server-deployment.yaml', 'server-service.yaml', 'serviceaccounts.yaml']) expect(files).toContain(f)
    const texts = new Map(await Promise.all(files.map(async (f) => [f, await readFile(new URL(f, dir), 'utf8')] as const)))
    const defined = new Set([...texts].filter(([f]) => /(^|\/)_[^/]+\.tpl$/.test(f)).flatMap(([, t]) => [...t.matchAll(/define "([^"]+)"/g)].map((m) => m[1])))
    for (const [f, text] of texts) {
      for (const m of text.matchAll(/include "([^"]+)"/g)) expect(defined.has(m[1]), `${f}: include "${m[1]}"`).toBe(true)
      // every {{ has its }}
      expect(text.split('{{').length, f).toBe(text.split('}}').length)
    }
    expect(texts.get('server-deployment.yaml')).toMatch(/required "relay\.announce/)
    for (const f of ['server-deployment.yaml', 'agent-daemonset.yaml']) expect(texts.get(f)).toContain('checksum/config:')
    const notes = texts.get('NOTES.txt')!
    expect(notes).toContain('edgemesh-server ready')
    expect(notes).toContain('bin/edgemesh.js status')
  })

  it('the Dockerfile builds the /app image the manifests run', async () => {
    const dockerfile = await readFile(new URL('manifests/Dockerfile', ROOT), 'utf8')
    expect(dockerfile).toMatch(/^FROM node:24-slim$/m)
    expect(dockerfile).toMatch(/^WORKDIR \/app$/m)
    expect(dockerfile).toMatch(/^RUN npm ci --omit=dev/m)
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node"\]$/m)
    for (const dir of ['bin', 'shared', 'server', 'agent']) expect(dockerfile).toMatch(new RegExp(`^COPY ${dir} \\./${dir}$`, 'm'))
    // the runtime stage installs `ip` (the edgemesh0 bridge) and iptables (the proxy's nat rules;
    // Debian's package has both iptables-nft and iptables-legacy)
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
    const install = runtime.split('\n').find((l) => /^RUN apt-get update && apt-get install /.test(l))
    expect(install, 'an apt-get install in the runtime stage').toBeDefined()
    const packages = install!.split('apt-get install ')[1]!.split('&&')[0]!.trim().split(/\s+/)
    expect(packages).toContain('iproute2')
    expect(packages).toContain('iptables')
  })
})

describe('helm chart rendered (helm template): node-local DNS', () => {
  const render = async (...set: string[]): Promise<Obj[]> => await renderChart({ args: set.flatMap((s) => ['--set', s]) })
  const RESOLV_VOLUME = 'host-resolv-conf'
  const hasResolvConf = (objs: Obj[]): boolean => {
    const spec = agentDs(objs).spec.template.spec
    return (spec.volumes as Obj[]).some((v) => v.name === RESOLV_VOLUME) ||
      (container(agentDs(objs), 'agent').volumeMounts as Obj[]).some((m) => m.name === RESOLV_VOLUME)
  }
  const caps = (objs: Obj[]): string[] => [...container(agentDs(objs), 'agent').securityContext.capabilities.add].sort()
  let chart: Obj[]
  let noDns: Obj[]
  beforeAll(async () => {
    [chart, noDns] = await Promise.all([render(), render('agent.dns.enabled=false')])
  })

  it('agent.yaml: the plain manifest\'s, dns section included, valid for AgentConfig', () => {
    expect(parseYaml(agentConfigText(chart))).toEqual(parseYaml(agentConfigText()))
    expect(parseYaml(agentConfigText(chart)).dns).toEqual({ listen: '169.254.96.16:53', clusterDomain: 'cluster.local', resolvConf: HOST_RESOLV_CONF })
    expect(agentConfig(chart).dns).toEqual(DNS)
  })

  it('the DaemonSet mounts the node\'s resolv.conf (hostPath File, read-only) where dns.resolvConf points, like the plain manifest', () => {
    expect(hostFileAt(agentDs(chart), 'agent', agentConfig(chart).dns!.resolvConf)).toBe('/etc/resolv.conf')
    const mount = (objs: Obj[]): Obj | undefined => (container(agentDs(objs), 'agent').volumeMounts as Obj[]).find((m) => m.name === RESOLV_VOLUME)
    const volume = (objs: Obj[]): Obj | undefined => (agentDs(objs).spec.template.spec.volumes as Obj[]).find((v) => v.name === RESOLV_VOLUME)
    expect(mount(chart)).toEqual(mount(docs))
    expect(volume(chart)).toEqual(volume(docs))
  })

  it('the agent container adds NET_BIND_SERVICE to the proxy\'s NET_ADMIN/NET_RAW, with the plain manifest\'s securityContext', () => {
    expect(caps(chart)).toEqual(['NET_ADMIN', 'NET_BIND_SERVICE', 'NET_RAW'])
    expect(container(agentDs(chart), 'agent').securityContext).toEqual(container(agentDs(), 'agent').securityContext)
    // no host ports on 53: they would clash with any other DNS cache on the node (NodeLocal DNSCache)
    expect((container(agentDs(chart), 'agent').ports as Obj[]).map((p) => p.containerPort)).not.toContain(53)
  })

  it('agent.dns.enabled=false: no dns section, no resolv.conf mount, no NET_BIND_SERVICE; nothing else changes', () => {
    expect(parseYaml(agentConfigText(noDns)).dns).toBeUndefined()
    expect(agentConfig(noDns).dns).toBeUndefined()
    expect(hasResolvConf(noDns)).toBe(false)
    expect(caps(noDns)).toEqual(['NET_ADMIN', 'NET_RAW'])
    // the default render minus exactly those is the DNS-less one (the checksums aside: the
    // config's changed, and helm template, which cannot look up the kept Secret, draws a new PSK)
    const stripped = structuredClone(agentDs(chart))
    const pod = stripped.spec.template
    pod.spec.volumes = (pod.spec.volumes as Obj[]).filter((v) => v.name !== RESOLV_VOLUME)
    const c = container(stripped, 'agent')
    c.volumeMounts = (c.volumeMounts as Obj[]).filter((m) => m.name !== RESOLV_VOLUME)
    c.securityContext.capabilities.add = (c.securityContext.capabilities.add as string[]).filter((x) => x !== 'NET_BIND_SERVICE')
    const off = structuredClone(agentDs(noDns))
    expect(off.spec.template.metadata.annotations['checksum/config']).not.toBe(pod.metadata.annotations['checksum/config'])
    delete pod.metadata.annotations['checksum/config']
    delete off.spec.template.metadata.annotations['checksum/config']
    delete pod.metadata.annotations['checksum/psk']
    delete off.spec.template.metadata.annotations['checksum/psk']
    expect(off).toEqual(stripped)
    const { dns: _dns, ...rest } = parseYaml(agentConfigText(chart))
    expect(parseYaml(agentConfigText(noDns))).toEqual(rest)
  })

  it('agent.dns.upstreams and clusterDomain reach agent.yaml; an empty list leaves the default (the node\'s resolv.conf)', async () => {
    const objs = await render('agent.dns.upstreams={10.0.0.2:53,10.0.0.3:5353}', 'agent.dns.clusterDomain=edge.example')
    expect(agentConfig(objs).dns).toEqual({ ...DNS, clusterDomain: 'edge.example', upstreams: ['10.0.0.2:53', '10.0.0.3:5353'] })
    expect(parseYaml(agentConfigText(chart)).dns.upstreams).toBeUndefined()
  })

  it('values reused from a release older than agent.dns (and a securityContext without capabilities) still render a working DNS', async () => {
    const objs = await render('agent.dns=null', 'agent.securityContext=null')
    expect(agentConfig(objs).dns).toEqual(DNS)
    expect(hostFileAt(agentDs(objs), 'agent', HOST_RESOLV_CONF)).toBe('/etc/resolv.conf')
    expect(caps(objs)).toEqual(['NET_ADMIN', 'NET_BIND_SERVICE', 'NET_RAW'])
  })
})

describe('helm chart rendered (helm template): ClusterIP proxy', () => {
  const render = async (...set: string[]): Promise<Obj[]> => await renderChart({ args: set.flatMap((s) => ['--set', s]) })
  const caps = (objs: Obj[]): string[] => [...(container(agentDs(objs), 'agent').securityContext.capabilities?.add ?? [])].sort()
  const rawConfig = (objs: Obj[]): Obj => parseYaml(agentConfigText(objs))
  const REFUSAL = 'agent.proxy.enabled is true but agent.kubernetes.enabled is false'
  let chart: Obj[]
  let noProxy: Obj[]
  let standalone: Obj[]
  beforeAll(async () => {
    [chart, noProxy, standalone] = await Promise.all([
      render(), render('agent.proxy.enabled=false'), render('agent.kubernetes.enabled=false')
    ])
  })

  it('agent.yaml: the plain manifest\'s proxy section, every values.yaml key, valid for AgentConfig', () => {
    expect(rawConfig(chart).proxy).toEqual(rawConfig(docs).proxy)
    expect(rawConfig(chart).proxy).toEqual(PROXY_YAML)
    expect(agentConfig(chart).proxy).toEqual(PROXY)
    expect(agentConfig(chart).kubernetes).toBeDefined()
  })

  it('the DaemonSet runs in the host network with NET_ADMIN and NET_RAW, the xtables lock and /lib/modules, like the plain manifest', () => {
    const ds = agentDs(chart)
    expect(ds.spec.template.spec.hostNetwork).toBe(true)
    expect(caps(chart)).toEqual(expect.arrayContaining(['NET_ADMIN', 'NET_RAW']))
    expect(container(ds, 'agent').securityContext.capabilities.drop).toEqual(['ALL'])
    expect(container(ds, 'agent').securityContext.privileged ?? false).toBe(false)
    expectProxyMounts(ds)
    // the same mounts and volumes (config volumes aside: their sources are compared in the PSK tests)
    expect(container(ds, 'agent').volumeMounts).toEqual(container(agentDs(), 'agent').volumeMounts)
    const volumes = (objs: Obj[]): Obj[] => (agentDs(objs).spec.template.spec.volumes as Obj[]).filter((v) => v.name !== 'config')
    expect(volumes(chart)).toEqual(volumes(docs))
  })

  it('agent.proxy.enabled=false: no proxy section, no xtables.lock or /lib/modules mount, no NET_RAW; nothing else changes', () => {
    expect(rawConfig(noProxy).proxy).toBeUndefined()
    expect(hasProxyMounts(agentDs(noProxy))).toBe(false)
    // DNS still needs NET_ADMIN for its bridge
    expect(caps(noProxy)).toEqual(['NET_ADMIN', 'NET_BIND_SERVICE'])
    // the default render minus exactly those is the proxy-less one (the config checksum aside)
    const stripped = structuredClone(agentDs(chart))
    const pod = stripped.spec.template
    pod.spec.volumes = (pod.spec.volumes as Obj[]).filter((v) => !PROXY_VOLUMES.includes(v.name))
    const c = container(stripped, 'agent')
    c.volumeMounts = (c.volumeMounts as Obj[]).filter((m) => !PROXY_VOLUMES.includes(m.name))
    c.securityContext.capabilities.add = (c.securityContext.capabilities.add as string[]).filter((x) => x !== 'NET_RAW')
    const off = structuredClone(agentDs(noProxy))
    expect(off.spec.template.metadata.annotations['checksum/config']).not.toBe(pod.metadata.annotations['checksum/config'])
    delete pod.metadata.annotations['checksum/config']
    delete off.spec.template.metadata.annotations['checksum/config']
    delete pod.metadata.annotations['checksum/psk']
    delete off.spec.template.metadata.annotations['checksum/psk']
    expect(off).toEqual(stripped)
    const { proxy: _proxy, ...rest } = rawConfig(chart)
    expect(rawConfig(noProxy)).toEqual(rest)
    // the RBAC stays: Kubernetes mode still reads the catalog (and DestinationRules are harmless)
    expect(noProxy.filter((o) => RBAC_KINDS.has(o.kind)).length).toBe(chart.filter((o) => RBAC_KINDS.has(o.kind)).length)
  })

  it('with neither the proxy nor DNS the agent container adds no capability', async () => {
    const objs = await render('agent.proxy.enabled=false', 'agent.dns.enabled=false')
    expect(caps(objs)).toEqual([])
    expect(container(agentDs(objs), 'agent').securityContext.capabilities.drop).toEqual(['ALL'])
    expect(hasProxyMounts(agentDs(objs))).toBe(false)
    expect(rawConfig(objs).proxy).toBeUndefined()
    expect(rawConfig(objs).dns).toBeUndefined()
  })

  it('every agent.proxy value reaches agent.yaml', async () => {
    const objs = await render(
      'agent.proxy.listen=169.254.20.11', 'agent.proxy.iptables=legacy', 'agent.proxy.directCidrs={10.244.0.0/16,192.168.10.0/24}',
      'agent.proxy.minSyncIntervalMs=1000', 'agent.proxy.resyncSeconds=300', 'agent.proxy.connectTimeoutMs=1500',
      'agent.proxy.udpIdleSeconds=20', 'agent.proxy.udpStreamIdleSeconds=600', 'agent.proxy.destinationRules=false', 'agent.proxy.cleanupOnExit=false'
    )
    const set = {
      listen: '169.254.20.11', iptables: 'legacy', directCidrs: ['10.244.0.0/16', '192.168.10.0/24'], minSyncIntervalMs: 1000, resyncSeconds: 300,
      connectTimeoutMs: 1500, udpIdleSeconds: 20, udpStreamIdleSeconds: 600, destinationRules: false, cleanupOnExit: false
    }
    expect(Object.keys(set).sort()).toEqual(Object.keys(PROXY_YAML).sort())
    expect(rawConfig(objs).proxy).toEqual(set)
    expect(agentConfig(objs).proxy).toEqual({ ...PROXY, ...set })
    expectProxyMounts(agentDs(objs))
  })

  it('agent.extraConfig.proxy reaches the keys values.yaml does not list (device, chainPrefix)', async () => {
    const objs = await render('agent.extraConfig.proxy.chainPrefix=EDGE', 'agent.extraConfig.proxy.device=')
    expect(agentConfig(objs).proxy).toEqual({ ...PROXY, chainPrefix: 'EDGE', device: '' })
  })

  it('standalone mode (agent.kubernetes.enabled=false) leaves the proxy off: no section, no mounts, no NET_RAW', () => {
    expect(rawConfig(standalone).kubernetes).toBeUndefined()
    expect(rawConfig(standalone).proxy).toBeUndefined()
    expect(hasProxyMounts(agentDs(standalone))).toBe(false)
    expect(caps(standalone)).toEqual(['NET_ADMIN', 'NET_BIND_SERVICE'])
  })

  it('refuses to render the proxy without Kubernetes mode, saying why and what to set', async () => {
    const err = await render('agent.kubernetes.enabled=false', 'agent.proxy.enabled=true').then(() => undefined, (e: Error) => e)
    expect(err, 'helm template must fail').toBeInstanceOf(Error)
    expect(err!.message).toContain(REFUSAL)
    expect(err!.message).toContain('agent.proxy.enabled=false')
    // explicitly off in standalone mode renders
    const objs = await render('agent.kubernetes.enabled=false', 'agent.proxy.enabled=false')
    expect(rawConfig(objs).proxy).toBeUndefined()
    expect(hasProxyMounts(agentDs(objs))).toBe(false)
  })

  it('values reused from a release older than agent.proxy (or enabled=null) run it in Kubernetes mode with the defaults', async () => {
    for (const objs of await Promise.all([render('agent.proxy=null'), render('agent.proxy.enabled=null'), render('agent.proxy.enabled=true')])) {
      expect(agentConfig(objs).proxy).toEqual(PROXY)
      expectProxyMounts(agentDs(objs))
      expect(caps(objs)).toEqual(['NET_ADMIN', 'NET_BIND_SERVICE', 'NET_RAW'])
    }
  })
})

describe('helm chart rendered (helm template): the PSK (cluster membership)', () => {
  const render = async (...set: string[]): Promise<Obj[]> => await renderChart({ args: set.flatMap((s) => ['--set', s]) })
  const serverDs = (objs: Obj[]): Obj => find('Deployment', 'edgemesh-server', objs)
  const agentWorkload = (objs: Obj[]): Obj => find('DaemonSet', 'edgemesh-agent', objs)
  const secrets = (objs: Obj[]): Obj[] => objs.filter((o) => o.kind === 'Secret')
  const swarmKey = (objs: Obj[]): string => Buffer.from(find('Secret', 'edgemesh-psk', objs).data['swarm.key'], 'base64').toString('utf8')
  const checksum = (w: Obj): string | undefined => w.spec.template.metadata.annotations['checksum/psk']
  const configs = (objs: Obj[]): Obj[] => [parseYaml(find('ConfigMap', 'edgemesh-server', objs).data['server.yaml']), parseYaml(find('ConfigMap', 'edgemesh-agent', objs).data['agent.yaml'])]
  const SWARM_KEY = /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/
  let chart: Obj[]
  let again: Obj[]
  beforeAll(async () => { [chart, again] = await Promise.all([render(), render()]) })

  it('by default the chart renders a Secret with a random swarm.key that @libp2p/pnet accepts, kept on uninstall', () => {
    expect(secrets(chart).map((o) => o.metadata.name)).toEqual(['edgemesh-psk'])
    const secret = find('Secret', 'edgemesh-psk', chart)
    expect(secret.metadata.namespace).toBe('edgemesh')
    expect(secret.metadata.annotations['helm.sh/resource-policy']).toBe('keep')
    const file = swarmKey(chart)
    expect(file).toMatch(SWARM_KEY)
    const protector = preSharedKey({ psk: new TextEncoder().encode(file) })() as unknown as { psk: Uint8Array }
    expect(Buffer.from(protector.psk).toString('hex')).toBe(file.slice(-64))
    // helm template cannot look the kept Secret up: every render draws a new key (helm install/upgrade keep it: test/e2e/k8s-rbac.test.ts)
    expect(swarmKey(again)).not.toBe(file)
  })

  it('the relay and every agent mount it at pskFile, and restart when it changes (checksum of that very key)', () => {
    for (const [w, name, cfg] of [[serverDs(chart), 'server', configs(chart)[0]!], [agentWorkload(chart), 'agent', configs(chart)[1]!]] as const) {
      expect(cfg.pskFile).toBe('/etc/edgemesh/swarm.key')
      expect(fileSource(w, name, cfg.pskFile, chart)).toEqual({ kind: 'Secret', name: 'edgemesh-psk', key: 'swarm.key', optional: false })
      expect(checksum(w)).toBe(createHash('sha256').update(swarmKey(chart)).digest('hex'))
    }
  })

  it('psk.key: the Secret holds exactly that key (lowercased), and renders the same every time', async () => {
    const key = 'AB'.repeat(16) + '0f'.repeat(16)
    const [a, b] = await Promise.all([render(`psk.key=${key}`), render(`psk.key=${key}`)])
    expect(swarmKey(a)).toBe(`/key/swarm/psk/1.0.0/\n/base16/\n${key.toLowerCase()}`)
    expect(checksum(serverDs(a))).toBe(checksum(serverDs(b)))
    expect(checksum(agentWorkload(a))).toBe(createHash('sha256').update(swarmKey(a)).digest('hex'))
  })

  it('psk.existingSecret: no Secret of the chart; both mount the named one (no checksum: the chart cannot see it)', async () => {
    const objs = await render('psk.existingSecret=mesh-key', 'psk.secretKey=key.txt')
    expect(secrets(objs)).toEqual([])
    for (const [w, name] of [[serverDs(objs), 'server'], [agentWorkload(objs), 'agent']] as const) {
      expect(fileSource(w, name, '/etc/edgemesh/swarm.key', objs)).toEqual({ kind: 'Secret', name: 'mesh-key', key: 'key.txt', optional: false })
      expect(checksum(w)).toBeUndefined()
    }
    for (const cfg of configs(objs)) expect(cfg.pskFile).toBe('/etc/edgemesh/swarm.key')
  })

  it('psk.enabled=false (the opt-out): no Secret, no pskFile, no mount; the configs stay valid', async () => {
    const objs = await render('psk.enabled=false')
    expect(secrets(objs)).toEqual([])
    const [server, agent] = configs(objs)
    expect(server!.pskFile).toBeUndefined()
    expect(agent!.pskFile).toBeUndefined()
    expect(ServerConfig.safeParse(server).success).toBe(true)
    expect(AgentConfig.safeParse({ ...agent, nodeName: 'edge-node-1' }).success).toBe(true)
    for (const w of [serverDs(objs), agentWorkload(objs)]) {
      const config = (w.spec.template.spec.volumes as Obj[]).find((v) => v.name === 'config')!
      expect(config.projected.sources.map((src: Obj) => Object.keys(src)[0])).toEqual(['configMap'])
      expect(checksum(w)).toBeUndefined()
    }
  })

  it('agents without this release\'s relay (server.enabled=false) need the relay\'s key: no random one, the render says how', async () => {
    const edge = ['server.enabled=false', 'agent.relays[0].host=203.0.113.10', 'agent.relays[0].peerId=12D3KooWPgHATvH9wN3n43y2TgqGQabmPTxmEDX3rUHkRqLbuZAT']
    const err = await render(...edge).then(() => undefined, (e: Error) => e)
    expect(err, 'helm template must fail').toBeInstanceOf(Error)
    expect(err!.message).toContain('server.enabled is false, so the agents use a relay of another release or cluster, and they need that relay\'s PSK')
    expect(err!.message).toContain('--set psk.existingSecret=edgemesh-psk')
    expect(err!.message).toContain('--set psk.enabled=false')
    const key = 'cd'.repeat(32)
    const withKey = await render(...edge, `psk.key=${key}`)
    expect(swarmKey(withKey)).toBe(`/key/swarm/psk/1.0.0/\n/base16/\n${key}`)
    const existing = await render(...edge, 'psk.existingSecret=edgemesh-psk')
    expect(secrets(existing)).toEqual([])
    expect(parseYaml(find('ConfigMap', 'edgemesh-agent', existing).data['agent.yaml']).pskFile).toBe('/etc/edgemesh/swarm.key')
  })

  it('server.limits reach server.yaml\'s limits, valid for ServerConfig; none by default (the binary\'s defaults)', async () => {
    expect(configs(chart)[0]!.limits).toBeUndefined()
    const objs = await render('server.limits.maxAgentsPerIp=3', 'server.limits.circuitDataBytes=0')
    const server = configs(objs)[0]!
    expect(server.limits).toEqual({ maxAgentsPerIp: 3, circuitDataBytes: 0 })
    expect(ServerConfig.parse(server).limits).toMatchObject({ maxAgentsPerIp: 3, circuitDataBytes: 0, connectBurst: 100 })
    const bad = await render('server.limits.maxPairs=3').then(() => undefined, (e: Error) => e)
    expect(bad?.message).toContain("at '/server/limits': additional properties 'maxPairs' not allowed")
  })
})
