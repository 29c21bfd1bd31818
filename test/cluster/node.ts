// One kubelet + containerd pair in a lab host's network namespace. Both run in the HOST mount
// namespace (nsenter --net, not `ip netns exec`): the kubelet's volume mounts (projected tokens,
// ConfigMaps) must be visible to containerd and runc. Everything the node writes lives in its
// own directory and cgroup root, so several nodes share one host; stop() removes all of it,
// also after a start that failed halfway.
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { ExecResult, Lab, LabHost, LabProcess } from '../lab/lab.ts'
import { runCapture } from '../lab/proc.ts'
import { sleep } from '../lab/wait.ts'
import { startKubeProxy } from './kube-proxy.ts'
import { CONTROL_PLANE_BIN, type ControlPlane } from '../controlplane/harness.ts'
import { certKubeconfig, cniConfig, containerdConfig, kubeletConfig, nodePaths, type NodePaths } from './node-config.ts'

const execFileP = promisify(execFile)
export const RUNC = '/usr/sbin/runc'
export const CNI_BIN_DIR = '/usr/lib/cni'
const CGROUP_FS = '/sys/fs/cgroup'
const CONTAINER_LOG_LINKS = '/var/log/containers'

export type NodeRole = 'public' | 'edge'

export interface ClusterNode {
  name: string
  host: LabHost
  podCidr: string
  role: NodeRole
  /** the node's directory: containerd.log, kubelet.log, configs, kubelet root, pod logs */
  dir: string
  /** crictl against this node's containerd (in the node's network namespace) */
  crictl(args: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>
  /** ctr -n k8s.io against this node's containerd */
  ctr(args: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>
  /** argv in the node's network and mount namespaces (iptables -S, ip link, cat a hostPath file, ...) */
  exec(argv: string[], opts?: { timeoutMs?: number }): Promise<ExecResult>
  /** where a path on the node is on this host: node-private paths (the cluster's privatePaths) live below dir */
  hostPath(path: string): string
  /** id of a pod's container on this node (the newest, running or exited); throws when there is none */
  containerId(pod: string, opts?: PodContainer): Promise<string>
  /** a pod container's output so far (crictl logs: stdout then stderr) */
  containerLogs(pod: string, opts?: PodContainer): Promise<string>
  /** argv in a pod's running container (crictl exec, through the node's runtime, not the apiserver) */
  containerExec(pod: string, argv: string[], opts?: PodContainer & { timeoutMs?: number }): Promise<ExecResult>
}

/** namespace default 'default'; container default: the pod's only (or first listed) container */
export interface PodContainer { namespace?: string, container?: string }

export interface NodeContext {
  lab: Lab
  cp: ControlPlane
  /** where kubelets reach the apiserver (through their NATs) */
  apiUrlInLab: string
  sandboxImage: { archive: string, ref: string }
  clusterDns: string
  /** the Service range's first address (the kubernetes Service, which kube-proxy gives every node) */
  kubernetesServiceIp: string
  /** kube-proxy's kubeconfig (system:node-proxier, server reachable from the lab) */
  kubeProxyKubeconfig: string
  /** all nodes' pod ranges */
  clusterCidr: string
  /** host paths each node gets its own copy of (hostPath volumes of a DaemonSet, log dirs) */
  privatePaths: string[]
}

export interface NodeSpec { host: string, role: NodeRole, podCidr: string }

async function openssl (args: string[], cwd: string): Promise<void> {
  try { await execFileP('openssl', args, { cwd }) } catch (err: any) { throw new Error(`cluster node: openssl ${args[0]} failed: ${err.stderr ?? err.message}`) }
}

function cgroupHierarchies (): string[] {
  // v1 hierarchies (cpu, memory, ..., name=systemd) plus the hybrid 'unified' v2 mount
  return readdirSync(CGROUP_FS).map(d => join(CGROUP_FS, d)).filter(d => {
    try { return statSync(d).isDirectory() && existsSync(join(d, 'cgroup.procs')) } catch { return false }
  })
}

/** The full name containerd stores for an image reference (docker.io/library/ for short names, :latest). */
export function normalizeImageRef (ref: string): string {
  if (ref.includes('@')) return ref
  const slash = ref.indexOf('/')
  const first = slash < 0 ? '' : ref.slice(0, slash)
  const hasDomain = first !== '' && (first.includes('.') || first.includes(':') || first === 'localhost')
  const named = hasDomain ? ref : `docker.io/${slash < 0 ? 'library/' : ''}${ref}`
  const lastPart = named.slice(named.lastIndexOf('/') + 1)
  return lastPart.includes(':') ? named : `${named}:latest`
}

/** Mount points at or below dir, deepest first (from /proc/self/mountinfo; octal escapes decoded). */
export function mountsBelow (dir: string, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string[] {
  const decode = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
  const points = mountinfo.split('\n').map(l => l.split(' ')[4]).filter((m): m is string => m !== undefined).map(decode)
  return [...new Set(points.filter(m => m === dir || m.startsWith(dir + '/')))].sort((a, b) => b.length - a.length)
}

export class NodeRunner implements ClusterNode {
  readonly name: string
  readonly host: LabHost
  readonly podCidr: string
  readonly role: NodeRole
  readonly dir: string
  readonly cgroupRoot: string
  private readonly paths: NodePaths
  private containerd: LabProcess | undefined
  private kubelet: LabProcess | undefined
  private kubeProxy: LabProcess | undefined
  /** holds the node's mount namespace (its private paths bound over the host's) */
  private mountNs: LabProcess | undefined
  private stopped: Promise<void> | undefined
  private readonly ctx: NodeContext

  constructor (ctx: NodeContext, spec: NodeSpec, clusterDir: string) {
    this.ctx = ctx
    this.host = ctx.lab.host(spec.host)
    this.name = spec.host
    this.role = spec.role
    this.podCidr = spec.podCidr
    this.dir = join(clusterDir, spec.host)
    this.paths = nodePaths(this.dir)
    this.cgroupRoot = `/edgemesh-${ctx.lab.prefix}${spec.host}`
  }

  async exec (argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return await this.ctx.lab.exec(this.host, [...this.enterMounts(), ...argv], { hostMounts: true, ...opts })
  }

  hostPath (path: string): string {
    const own = this.ctx.privatePaths.some(p => path === p || path.startsWith(p + '/'))
    return own ? join(this.dir, 'root', path) : path
  }

  async containerId (pod: string, opts: PodContainer = {}): Promise<string> {
    const args = ['ps', '-a', '-o', 'json', '--label', `io.kubernetes.pod.name=${pod}`, '--label', `io.kubernetes.pod.namespace=${opts.namespace ?? 'default'}`]
    if (opts.container !== undefined) args.push('--label', `io.kubernetes.container.name=${opts.container}`)
    const r = await this.crictl(args)
    if (r.code !== 0) throw new Error(`node ${this.name}: crictl ps: ${r.stderr.trim()}`)
    const list = (JSON.parse(r.stdout).containers ?? []) as Array<{ id: string, createdAt: string }>
    const newest = list.sort((a, b) => Number(BigInt(b.createdAt) - BigInt(a.createdAt)))[0]
    if (newest === undefined) throw new Error(`node ${this.name}: no container of pod ${opts.namespace ?? 'default'}/${pod}${opts.container === undefined ? '' : ` named ${opts.container}`}`)
    return newest.id
  }

  async containerLogs (pod: string, opts: PodContainer = {}): Promise<string> {
    const r = await this.crictl(['logs', await this.containerId(pod, opts)])
    if (r.code !== 0) throw new Error(`node ${this.name}: crictl logs: ${r.stderr.trim()}`)
    return r.stdout + r.stderr
  }

  async containerExec (pod: string, argv: string[], opts: PodContainer & { timeoutMs?: number } = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? 30_000
    const id = await this.containerId(pod, opts)
    return await this.crictl(['exec', '--sync', '--timeout', String(Math.ceil(timeoutMs / 1000)), id, ...argv], { timeoutMs: timeoutMs + 5000 })
  }

  private enterMounts (): string[] {
    const ns = this.mountNs
    if (ns === undefined || ns.child.exitCode !== null || ns.child.signalCode !== null) return []
    return ['nsenter', `--mount=/proc/${ns.pid}/ns/mnt`, '--']
  }

  /**
   * One mount namespace per node, shared by its kubelet and containerd (the kubelet's volume
   * mounts must be visible to containerd and runc) and private to the node: every private path
   * is bound to the node's own directory there, so a DaemonSet's hostPath volumes on two nodes
   * are two directories. Mounts made in it (pod volumes, rootfs) vanish with it.
   */
  private async startMountNamespace (): Promise<void> {
    const binds: string[] = []
    for (const p of this.ctx.privatePaths) {
      await mkdir(this.hostPath(p), { recursive: true }) // the mount point itself: the cluster made it
      binds.push(`mount --bind '${this.hostPath(p)}' '${p}'`)
    }
    this.mountNs = this.ctx.lab.spawn(this.host, ['unshare', '--mount', '--propagation', 'private', '--',
      'sh', '-c', `set -e; ${binds.join('; ')}; echo mount namespace ready; exec sleep infinity`], { hostMounts: true })
    await this.mountNs.waitForLine(/mount namespace ready/, 10_000)
  }

  async crictl (args: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return await this.exec([join(CONTROL_PLANE_BIN, 'crictl'), '--config', join(this.dir, 'crictl.yaml'), ...args], opts)
  }

  async ctr (args: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return await this.exec([join(CONTROL_PLANE_BIN, 'ctr'), '--address', this.paths.containerdSock, '-n', 'k8s.io', ...args], opts)
  }

  /** Imports an image archive (docker-archive or oci-archive) and makes sure it is named ref. */
  async importImage (archive: string, imageRef: string): Promise<void> {
    const ref = normalizeImageRef(imageRef) // what the CRI looks up for a pod's image: imageRef
    const r = await this.ctr(['images', 'import', '--local', archive], { timeoutMs: 300_000 })
    if (r.code !== 0) throw new Error(`node ${this.name}: ctr import ${archive}: ${r.stderr.trim()}`)
    const names = async (): Promise<string[]> => (await this.ctr(['images', 'ls', '-q'])).stdout.split('\n').filter(Boolean)
    if ((await names()).includes(ref)) return
    // An archive named differently (or not at all): tag what it brought.
    const imported = [...r.stdout.matchAll(/unpacking (\S+) \(sha256:/g)].map(m => m[1] as string)
    const from = imported[0]
    if (from === undefined) throw new Error(`node ${this.name}: ${archive} imported no named image (ctr said: ${r.stdout.trim()})`)
    const t = await this.ctr(['images', 'tag', '--force', from, ref])
    if (t.code !== 0) throw new Error(`node ${this.name}: ctr tag ${from} ${ref}: ${t.stderr.trim()}`)
  }

  async start (): Promise<void> {
    const { lab, cp } = this.ctx
    const p = this.paths
    for (const d of [p.cniConfDir, p.kubeletRoot, join(this.dir, 'pki'), join(this.dir, 's'), join(this.dir, 'pod-logs'), join(this.dir, 'cni/ipam')]) {
      await mkdir(d, { recursive: true })
    }
    this.makeCgroupRoot()
    await this.startMountNamespace()
    const sysctl = await this.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1'])
    if (sysctl.code !== 0) throw new Error(`node ${this.name}: sysctl: ${sysctl.stderr}`)
    // A host without a default route (relay0) needs a route to the kubernetes Service's address
    // for kube-proxy's OUTPUT DNAT to see the packet (routing comes before nat OUTPUT).
    if ((await this.exec(['ip', 'route', 'get', this.ctx.kubernetesServiceIp])).code !== 0) {
      const route = await this.exec(['ip', 'route', 'add', `${this.ctx.kubernetesServiceIp}/32`, 'dev', 'eth0'])
      if (route.code !== 0) throw new Error(`node ${this.name}: ip route add: ${route.stderr}`)
    }

    // kubelet identity: system:node:<name> in system:nodes (Node authorizer, NodeRestriction)
    const pki = join(this.dir, 'pki')
    await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/O=system:nodes/CN=system:node:${this.name}`,
      '-keyout', 'kubelet.key', '-out', 'kubelet.csr'], pki)
    await writeFile(join(pki, 'client.ext'), 'extendedKeyUsage=clientAuth\n')
    await openssl(['x509', '-req', '-in', 'kubelet.csr', '-CA', join(cp.dir, 'ca.crt'), '-CAkey', join(cp.dir, 'ca.key'), '-CAcreateserial',
      '-CAserial', join(pki, 'ca.srl'), '-days', '2', '-extfile', 'client.ext', '-out', 'kubelet.crt'], pki)
    await writeFile(join(pki, 'ca.crt'), cp.caPem)
    await writeFile(join(this.dir, 'kubelet.kubeconfig'), certKubeconfig(this.ctx.apiUrlInLab, join(pki, 'ca.crt'), join(pki, 'kubelet.crt'), join(pki, 'kubelet.key')))
    await writeFile(join(this.dir, 'containerd.toml'), containerdConfig(p, { sandboxImage: this.ctx.sandboxImage.ref, runc: RUNC, cniBinDir: CNI_BIN_DIR }))
    await writeFile(join(p.cniConfDir, '10-bridge.conflist'), cniConfig(p, this.podCidr))
    await writeFile(join(this.dir, 'kubelet.yaml'), kubeletConfig(p, { nodeIp: this.host.ip, cgroupRoot: this.cgroupRoot, clusterDns: this.ctx.clusterDns, clientCaFile: join(pki, 'ca.crt') }))
    await writeFile(join(this.dir, 'crictl.yaml'), `runtime-endpoint: unix://${p.containerdSock}\nimage-endpoint: unix://${p.containerdSock}\ntimeout: 30\n`)

    const env = { PATH: `${CONTROL_PLANE_BIN}:/usr/local/sbin:/usr/sbin:/sbin:${process.env.PATH ?? '/usr/bin:/bin'}` }
    this.containerd = lab.spawn(this.host, [...this.enterMounts(), join(CONTROL_PLANE_BIN, 'containerd'), '--config', join(this.dir, 'containerd.toml')],
      { hostMounts: true, env, logFile: join(this.dir, 'containerd.log') })
    await this.waitFor('containerd', this.containerd, async () => (await this.crictl(['info'], { timeoutMs: 5000 })).code === 0, 60_000)
    await this.importImage(this.ctx.sandboxImage.archive, this.ctx.sandboxImage.ref)

    this.kubelet = lab.spawn(this.host, [...this.enterMounts(), join(CONTROL_PLANE_BIN, 'kubelet'),
      `--config=${join(this.dir, 'kubelet.yaml')}`, `--kubeconfig=${join(this.dir, 'kubelet.kubeconfig')}`,
      `--root-dir=${p.kubeletRoot}`, `--cert-dir=${pki}`, `--hostname-override=${this.name}`, `--node-ip=${this.host.ip}`, '--v=1'],
    { hostMounts: true, env, logFile: join(this.dir, 'kubelet.log') })
    const kubelet = this.kubelet
    await this.waitFor('kubelet', kubelet, async () => (await this.exec(['curl', '-sf', 'http://127.0.0.1:10248/healthz'], { timeoutMs: 3000 })).stdout === 'ok', 120_000)

    // kube-proxy, as kubeadm runs it on every node: the in-cluster kubernetes Service (how the
    // agents' pods reach the apiserver) and every other Service below the mesh's own hooks
    this.kubeProxy = await startKubeProxy(lab, this.host, {
      kubeconfig: this.ctx.kubeProxyKubeconfig, nodeName: this.name, nodeIp: this.host.ip, clusterCidr: this.ctx.clusterCidr, dir: this.dir
    })
    await this.waitFor('kube-proxy', this.kubeProxy, async () =>
      (await this.exec(['iptables-save', '-t', 'nat'])).stdout.includes(`-d ${this.ctx.kubernetesServiceIp}/32`), 60_000)
  }

  /** Throws with the log tail if the process exits or ok() stays false. */
  private async waitFor (what: string, proc: LabProcess, ok: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    let exited = false
    void proc.exited.then(() => { exited = true })
    const deadline = Date.now() + timeoutMs
    while (!(await ok())) {
      if (exited) throw new Error(`node ${this.name}: ${what} exited during start (log ${this.dir}/${what}.log):\n${proc.stderr().slice(-3000)}`)
      if (Date.now() > deadline) throw new Error(`node ${this.name}: ${what} not ready after ${timeoutMs} ms (log ${this.dir}/${what}.log):\n${proc.stderr().slice(-3000)}`)
      await sleep(200)
    }
  }

  /** The kubelet refuses a cgroup root that does not exist; cpuset needs its cpus/mems filled in. */
  private makeCgroupRoot (): void {
    for (const h of cgroupHierarchies()) {
      if (h.endsWith('/unified')) continue
      const d = join(h, this.cgroupRoot)
      mkdirSync(d, { recursive: true })
      if (h.endsWith('/cpuset')) {
        for (const f of ['cpuset.cpus', 'cpuset.mems']) {
          if (readFileSync(join(d, f), 'utf8').trim() === '') {
            writeFileSync(join(d, f), readFileSync(join(h, f), 'utf8').trim(), { flag: 'r+' })
          }
        }
      }
    }
  }

  stop (): Promise<void> {
    this.stopped ??= this.doStop()
    return this.stopped
  }

  private async doStop (): Promise<void> {
    const problems: string[] = []
    await this.kubeProxy?.kill('SIGTERM', 3000)
    await this.kubelet?.kill('SIGTERM', 5000)
    if (this.containerd !== undefined && this.containerd.child.exitCode === null && this.containerd.child.signalCode === null) {
      // Pods first: the shims and containers outlive containerd.
      // (the socket is a file: no namespace needed, so this works after the lab's teardown too)
      const r = await runCapture([join(CONTROL_PLANE_BIN, 'crictl'), '--config', join(this.dir, 'crictl.yaml'), 'rmp', '--force', '--all'], { timeoutMs: 60_000 })
      if (r.code !== 0) problems.push(`crictl rmp: ${r.stderr.trim()}`)
      await this.containerd.kill('SIGTERM', 5000)
    }
    problems.push(...await removeNodeLeftovers(this.dir, this.cgroupRoot, async () => { await this.mountNs?.kill('SIGKILL') }))
    if (problems.length > 0) throw new Error(`node ${this.name} stop: ${problems.join('; ')}`)
  }
}

/**
 * Everything a node leaves once its kubelet and containerd are gone (stopped, or killed with a
 * crashed test run): shims (found by containerd's socket in their argv), runc containers,
 * processes in the node's cgroups and the cgroups, mounts below dir, the kubelet's log links,
 * then dir itself. Returns what could not be removed.
 */
export async function removeNodeLeftovers (dir: string, cgroupRoot: string, endMountNamespace?: () => Promise<void>): Promise<string[]> {
  const problems: string[] = []
  const sock = join(dir, 'containerd.sock')
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    let argv: string[]
    try { argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0') } catch { continue }
    if ((argv[0] ?? '').endsWith('containerd-shim-runc-v2') && argv.includes(sock)) {
      try { process.kill(Number(e), 'SIGKILL') } catch { /* gone */ }
    }
  }
  const runcRoot = join(dir, 'runc/k8s.io')
  if (existsSync(runcRoot)) {
    for (const id of readdirSync(runcRoot)) await runCapture([RUNC, '--root', runcRoot, 'delete', '--force', id], { timeoutMs: 20_000 })
  }
  await removeCgroups(cgroupRoot, problems)
  // last process of the node's mount namespace: its mounts go with it
  await endMountNamespace?.()
  for (const m of mountsBelow(dir)) {
    const u = await runCapture(['umount', '--lazy', m], { timeoutMs: 20_000 })
    if (u.code !== 0) problems.push(`umount ${m}: ${u.stderr.trim()}`)
  }
  // The kubelet links container logs into /var/log/containers (not configurable).
  let links: string[] = []
  try { links = readdirSync(CONTAINER_LOG_LINKS) } catch { /* none */ }
  for (const e of links) {
    const link = join(CONTAINER_LOG_LINKS, e)
    try { if (readlinkSync(link).startsWith(dir + '/')) unlinkSync(link) } catch { /* not a link or gone */ }
  }
  const left = mountsBelow(dir)
  if (left.length > 0) {
    // never rm -rf through a mount (a hostPath volume would be emptied)
    problems.push(`mounts left, ${dir} kept: ${left.join(', ')}`)
  } else {
    await rm(dir, { recursive: true, force: true })
  }
  return problems
}

async function removeCgroups (cgroupRoot: string, problems: string[]): Promise<void> {
  const roots = cgroupHierarchies().map(h => join(h, cgroupRoot)).filter(existsSync)
  const dirsDeepestFirst = (root: string): string[] => {
    const out: string[] = []
    const walk = (d: string): void => {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name))
      out.push(d)
    }
    try { walk(root) } catch { /* raced with a removal */ }
    return out
  }
  for (let attempt = 0; attempt < 50; attempt++) {
    let busy = false
    for (const root of roots) {
      for (const d of dirsDeepestFirst(root)) {
        // processes still here are the node's containers (started by its runtime)
        try {
          for (const pid of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
            try { process.kill(Number(pid), 'SIGKILL') } catch { /* gone */ }
          }
        } catch { /* already removed */ }
        try { rmdirSync(d) } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') busy = true }
      }
    }
    if (!busy) return
    await sleep(100)
  }
  problems.push(`cgroups left under ${cgroupRoot}: ${roots.filter(existsSync).join(', ')}`)
}
