// Network lab: a fake internet with NATed edge sites built from Linux network namespaces.
//
//   ${p}inet       bridge br0 = public segment 198.51.100.0/24 (no addresses of its own)
//   ${p}relay<r>   eth0 198.51.100.(10+r)
//   ${p}nat-<s>    site router: wan0 198.51.100.(20+i) on the public bridge, LAN bridge lan0 10.(i+1).0.1/24,
//                  NAT (cone / symmetric / udp-blocked) + home-router style firewall
//   ${p}<s><j+1>   site host: eth0 10.(i+1).0.(10+j), default route via the router
//
// Every lab has a unique prefix (`em` + 4 base36 chars + `-`), so labs built by parallel runs
// never collide. Needs root, iproute2 and iptables. Teardown kills only the processes the lab
// spawned (by PID / process group) and deletes only the lab's namespaces; a record per live lab
// in /tmp/edgemesh-labs lets later runs clean up after a creator that died without teardown.
import { execFile, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { randomInt } from 'node:crypto'
import { join } from 'node:path'
import { promisify } from 'node:util'
import {
  isAlive, killRefsSync, procStartTime, runCapture, signalRef, startProcess,
  type ExecResult, type LabProcess, type ProcRef, type StartOpts
} from './proc.ts'

export type { ExecResult, LabProcess } from './proc.ts'

export type NatKind = 'cone' | 'symmetric' | 'udp-blocked'
export interface SiteSpec { name: string, nat: NatKind, hosts?: number }
export interface LabSpec { sites: SiteSpec[], relays?: number, prefix?: string }
/** relays: 'relay0', 'relay1', ...; site hosts: `${site}${j + 1}`; routers: `nat-${site}`. */
export interface LabHost { name: string, ns: string, ip: string, site?: string }
export interface LabSite { name: string, nat: NatKind, publicIp: string, lanCidr: string, router: LabHost, hosts: LabHost[] }
/**
 * hostMounts: enter only the host's network namespace (`nsenter --net`), not a private mount
 * namespace as `ip netns exec` makes: for daemons whose mounts other processes must see (a
 * kubelet's volume mounts are used by containerd and runc).
 */
export interface ExecOpts { timeoutMs?: number, input?: string, hostMounts?: boolean }
export interface SpawnOpts extends StartOpts { hostMounts?: boolean }

export interface Lab {
  prefix: string
  relays: LabHost[]
  sites: LabSite[]
  /** Namespace holding the public bridge (br0), e.g. for tcpdump. */
  internetNs: string
  /** Every namespace of the lab. */
  namespaces: string[]
  /** Wall time createLab took, in ms. */
  setupMs: number
  /** Relay, site host or router (`nat-<site>`) by name; throws on unknown names. */
  host(name: string): LabHost
  site(name: string): LabSite
  /** `ip netns exec <ns> argv...`; never throws on a non-zero exit (code 124 = timed out, default 30 s). */
  exec(host: LabHost | string, argv: string[], opts?: ExecOpts): Promise<ExecResult>
  /** Long-running process in a namespace, tracked and killed by teardown. env is merged over process.env. */
  spawn(host: LabHost | string, argv: string[], opts?: SpawnOpts): LabProcess
  /** DNAT <site public IP>:publicPort -> host:hostPort on the site's router (from the WAN side only, no hairpin). */
  portForward(site: string, proto: 'tcp' | 'udp', publicPort: number, hostName: string, hostPort: number): Promise<void>
  /**
   * A pod-like namespace behind a site host (Calico-style: the pod's /32 is routed to a veth on
   * the host, the pod's default route is 169.254.1.1 answered by proxy ARP). Pod IPs come from
   * the host's pod CIDR 10.<site+1>.<100+hostIndex>.0/24. Torn down with the lab.
   */
  addPod(hostName: string, opts?: PodOptions): Promise<LabPod>
  /** Idempotent: SIGTERM (SIGKILL after 2 s) every spawned process, then delete all namespaces. */
  teardown(): Promise<void>
}
export interface LabPod extends LabHost { node: string }
/** resolvConf: the pod's /etc/resolv.conf (ip netns exec bind-mounts /etc/netns/<ns>/ over /etc), like the kubelet's dnsConfig */
export interface PodOptions { resolvConf?: string }

const PUBLIC_NET = '198.51.100'
const RECORD_DIR = '/tmp/edgemesh-labs'
const MAX_RELAYS = 10 // relays use .10-.19, routers start at .20
const MAX_SITES = 235 // 10.(i+1).0.0/24 and 198.51.100.(20+i)
const KILL_GRACE_MS = 2000
const DEFAULT_EXEC_TIMEOUT_MS = 30_000

const execFileP = promisify(execFile)

/** Runs a setup command; rejects with a message that includes the command and its stderr. */
async function run (cmd: string, args: string[], input?: string): Promise<string> {
  const p = execFileP(cmd, args, { maxBuffer: 64 << 20 })
  p.child.stdin?.on('error', () => { /* command did not read its input */ })
  p.child.stdin?.end(input ?? '')
  try {
    return (await p).stdout
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string }
    if (err.code === 'ENOENT') throw new Error(`network lab: '${cmd}' not found in PATH`)
    const detail = (err.stderr ?? '').trim() || err.message
    throw new Error(`network lab: \`${cmd} ${args.join(' ')}\` failed: ${detail}` +
      (input === undefined ? '' : `\n--- input ---\n${input}`))
  }
}

export function hostSpawnArgs (host: LabHost, argv: string[], hostMounts = false): string[] {
  return hostMounts ? ['nsenter', `--net=/run/netns/${host.ns}`, '--', ...argv] : ['ip', 'netns', 'exec', host.ns, ...argv]
}

// ---------------------------------------------------------------------------------------------
// Lab records (/tmp/edgemesh-labs/<prefix>.json) and stale-lab cleanup

interface LabRecord {
  prefix: string
  pid: number
  startTime: number
  namespaces: string[]
  procs: ProcRef[]
  createdAt: string
}

function recordPath (prefix: string): string {
  return join(RECORD_DIR, `${prefix}.json`)
}

function parseRecord (text: string): LabRecord {
  const r = JSON.parse(text) as Partial<LabRecord>
  const isRef = (x: unknown): x is ProcRef => typeof x === 'object' && x !== null &&
    typeof (x as ProcRef).pid === 'number' && typeof (x as ProcRef).startTime === 'number'
  if (typeof r.prefix !== 'string' || typeof r.pid !== 'number' || typeof r.startTime !== 'number' ||
    !Array.isArray(r.namespaces) || !r.namespaces.every(n => typeof n === 'string' && n.startsWith(r.prefix ?? '\0')) ||
    !Array.isArray(r.procs) || !r.procs.every(isRef)) {
    throw new Error('malformed lab record')
  }
  return r as LabRecord
}

async function deleteNamespaces (names: string[]): Promise<void> {
  if (names.length === 0) return
  // -force: keep going past namespaces that are already gone.
  await runCapture(['ip', '-force', '-batch', '-'], { input: names.map(n => `netns del ${n}\n`).join(''), timeoutMs: 30_000 })
}

function deleteNamespacesSync (names: string[]): void {
  if (names.length === 0) return
  try {
    execFileSync('ip', ['-force', '-batch', '-'], { input: names.map(n => `netns del ${n}\n`).join(''), stdio: ['pipe', 'ignore', 'ignore'] })
  } catch { /* some were already gone */ }
}

async function listNamespaces (): Promise<string[]> {
  const out = await run('ip', ['netns', 'list'])
  return out.split('\n').map(l => l.split(' ')[0] ?? '').filter(n => n !== '')
}

/**
 * Removes labs whose creating process is dead: kills the PIDs listed in their records (if still
 * the same processes) and deletes the namespaces listed there. Returns the cleaned prefixes.
 */
export async function cleanupStaleLabs (): Promise<string[]> {
  let files: string[]
  try {
    files = readdirSync(RECORD_DIR).filter(f => f.endsWith('.json'))
  } catch {
    return []
  }
  const cleaned: string[] = []
  for (const f of files) {
    const path = join(RECORD_DIR, f)
    let rec: LabRecord
    try {
      rec = parseRecord(readFileSync(path, 'utf8'))
    } catch {
      continue // being written or not ours: leave it alone
    }
    if (isAlive({ pid: rec.pid, startTime: rec.startTime })) continue
    for (const r of rec.procs) signalRef(r, 'SIGKILL')
    await deleteNamespaces(rec.namespaces)
    for (const n of rec.namespaces) rmSync(`/etc/netns/${n}`, { recursive: true, force: true }) // pods' resolv.conf
    try { unlinkSync(path) } catch { /* raced with another cleaner */ }
    cleaned.push(rec.prefix)
  }
  return cleaned
}

// ---------------------------------------------------------------------------------------------
// Process-wide teardown hooks

const liveLabs = new Set<LabImpl>()
let exitHookInstalled = false
let signalHooksInstalled = false

function installHooks (signals: boolean): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    // Last resort: nothing async can run here, so kill hard and delete namespaces synchronously.
    process.on('exit', () => { for (const lab of [...liveLabs]) lab.teardownSync(0) })
  }
  if (signals && !signalHooksInstalled) {
    signalHooksInstalled = true
    const onSignal = (code: number) => (): void => {
      for (const lab of [...liveLabs]) if (lab.signalTeardown) lab.teardownSync(1000)
      process.exit(code)
    }
    process.on('SIGINT', onSignal(130))
    process.on('SIGTERM', onSignal(143))
  }
}

// ---------------------------------------------------------------------------------------------
// Topology plan

interface Plan {
  inetNs: string
  relays: LabHost[]
  sites: LabSite[]
  namespaces: string[]
  /** Root namespace `ip -batch`: create namespaces and veth pairs with each end in its namespace. */
  rootBatch: string[]
  /** Per-namespace `ip -n <ns> -batch`: addresses, bridges, routes. */
  nsBatches: Map<string, string[]>
  /** Per-router iptables-restore input. */
  routerRules: Map<string, string>
}

const SITE_NAME_RE = /^[a-z][a-z0-9]{0,7}$/
const PREFIX_RE = /^[a-z0-9][a-z0-9-]{0,15}$/

function randomPrefix (): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz'
  let s = 'em'
  for (let i = 0; i < 4; i++) s += alphabet[randomInt(alphabet.length)]
  return s + '-'
}

function routerRules (nat: NatKind): string {
  // Home-router firewall. INPUT drops unsolicited WAN packets *in filter*, before conntrack
  // confirms them: otherwise a peer's early hole-punch packet would leave a confirmed
  // "peer -> router:port" entry, the outgoing mapping would clash with it and MASQUERADE would
  // pick another port, breaking simultaneous punching between two cone sites.
  return [
    '*nat',
    `-A POSTROUTING -o wan0 -j MASQUERADE${nat === 'symmetric' ? ' --random-fully' : ''}`,
    'COMMIT',
    '*filter',
    '-A INPUT -i wan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
    '-A INPUT -i wan0 -p icmp -j ACCEPT',
    '-A INPUT -i wan0 -j DROP',
    ...(nat === 'udp-blocked' ? ['-A FORWARD -i lan0 -o wan0 -p udp -j DROP'] : []),
    '-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT',
    // Connections DNATed by portForward() rules are the only NEW ones allowed in from the WAN.
    '-A FORWARD -i wan0 -o lan0 -m conntrack --ctstate DNAT -j ACCEPT',
    '-A FORWARD -i wan0 -j DROP',
    'COMMIT',
    ''
  ].join('\n')
}

function plan (spec: LabSpec, prefix: string): Plan {
  const relayCount = spec.relays ?? 1
  if (!Number.isInteger(relayCount) || relayCount < 0 || relayCount > MAX_RELAYS) {
    throw new Error(`network lab: relays must be an integer in 0..${MAX_RELAYS}`)
  }
  if (spec.sites.length > MAX_SITES) throw new Error(`network lab: at most ${MAX_SITES} sites`)
  const names = new Set<string>()
  const claim = (name: string): void => {
    if (names.has(name)) throw new Error(`network lab: duplicate host name '${name}'`)
    names.add(name)
  }

  const inetNs = `${prefix}inet`
  const rootBatch: string[] = [`netns add ${inetNs}`]
  const nsBatches = new Map<string, string[]>()
  const routerRulesMap = new Map<string, string>()
  const inet = ['link set lo up', 'link add br0 type bridge', 'link set br0 up']
  nsBatches.set(inetNs, inet)

  // A veth pair with one end created directly in each namespace (never visible in the root ns).
  const veth = (nameA: string, nsA: string, nameB: string, nsB: string): void => {
    rootBatch.push(`link add ${nameA} netns ${nsA} type veth peer name ${nameB} netns ${nsB}`)
  }

  const relays: LabHost[] = []
  for (let r = 0; r < relayCount; r++) {
    const host: LabHost = { name: `relay${r}`, ns: `${prefix}relay${r}`, ip: `${PUBLIC_NET}.${10 + r}` }
    claim(host.name)
    relays.push(host)
    rootBatch.push(`netns add ${host.ns}`)
    veth(`r${r}`, inetNs, 'eth0', host.ns)
    inet.push(`link set r${r} master br0`, `link set r${r} up`)
    nsBatches.set(host.ns, ['link set lo up', `addr add ${host.ip}/24 dev eth0`, 'link set eth0 up'])
  }

  const siteNames = spec.sites.map(s => s.name)
  const dup = siteNames.find((n, i) => siteNames.indexOf(n) !== i)
  if (dup !== undefined) throw new Error(`network lab: duplicate site name '${dup}'`)
  const sites: LabSite[] = []
  spec.sites.forEach((s, i) => {
    if (!SITE_NAME_RE.test(s.name)) throw new Error(`network lab: bad site name '${s.name}' (want ${SITE_NAME_RE})`)
    if (s.nat !== 'cone' && s.nat !== 'symmetric' && s.nat !== 'udp-blocked') {
      throw new Error(`network lab: bad NAT kind '${String(s.nat)}' for site ${s.name}`)
    }
    const hostCount = s.hosts ?? 1
    if (!Number.isInteger(hostCount) || hostCount < 1 || hostCount > 200) {
      throw new Error(`network lab: site ${s.name}: hosts must be an integer in 1..200`)
    }
    const publicIp = `${PUBLIC_NET}.${20 + i}`
    const lanNet = `10.${i + 1}.0`
    const router: LabHost = { name: `nat-${s.name}`, ns: `${prefix}nat-${s.name}`, ip: publicIp, site: s.name }
    claim(router.name)
    rootBatch.push(`netns add ${router.ns}`)
    veth(`s${i}`, inetNs, 'wan0', router.ns)
    inet.push(`link set s${i} master br0`, `link set s${i} up`)
    const rb = [
      'link set lo up',
      `addr add ${publicIp}/24 dev wan0`, 'link set wan0 up',
      'link add lan0 type bridge', `addr add ${lanNet}.1/24 dev lan0`, 'link set lan0 up'
    ]
    nsBatches.set(router.ns, rb)
    routerRulesMap.set(router.ns, routerRules(s.nat))

    const hosts: LabHost[] = []
    for (let j = 0; j < hostCount; j++) {
      const host: LabHost = { name: `${s.name}${j + 1}`, ns: `${prefix}${s.name}${j + 1}`, ip: `${lanNet}.${10 + j}`, site: s.name }
      claim(host.name)
      hosts.push(host)
      rootBatch.push(`netns add ${host.ns}`)
      veth(`h${j + 1}`, router.ns, 'eth0', host.ns)
      rb.push(`link set h${j + 1} master lan0`, `link set h${j + 1} up`)
      nsBatches.set(host.ns, [
        'link set lo up', `addr add ${host.ip}/24 dev eth0`, 'link set eth0 up', `route add default via ${lanNet}.1`
      ])
    }
    sites.push({ name: s.name, nat: s.nat, publicIp, lanCidr: `${lanNet}.0/24`, router, hosts })
  })

  // Namespaces must exist before veths reference them: move all `netns add` lines first.
  const adds = rootBatch.filter(l => l.startsWith('netns add '))
  const links = rootBatch.filter(l => !l.startsWith('netns add '))
  return {
    inetNs,
    relays,
    sites,
    namespaces: adds.map(l => l.slice('netns add '.length)),
    rootBatch: [...adds, ...links],
    nsBatches,
    routerRules: routerRulesMap
  }
}

// ---------------------------------------------------------------------------------------------
// Lab

interface Tracked { ref: ProcRef, child: ChildProcess, exited: Promise<unknown> }

class LabImpl implements Lab {
  prefix: string
  relays: LabHost[]
  sites: LabSite[]
  internetNs: string
  namespaces: string[]
  setupMs = 0
  signalTeardown: boolean
  private byName = new Map<string, LabHost>()
  private tracked = new Set<Tracked>()
  private teardownPromise: Promise<void> | undefined
  private closed = false
  private createdAt = new Date().toISOString()

  constructor (prefix: string, p: Plan, signalTeardown: boolean) {
    this.prefix = prefix
    this.relays = p.relays
    this.sites = p.sites
    this.internetNs = p.inetNs
    this.namespaces = p.namespaces
    this.signalTeardown = signalTeardown
    for (const h of p.relays) this.byName.set(h.name, h)
    for (const s of p.sites) {
      this.byName.set(s.router.name, s.router)
      for (const h of s.hosts) this.byName.set(h.name, h)
    }
  }

  host (name: string): LabHost {
    const h = this.byName.get(name)
    if (h === undefined) throw new Error(`network lab ${this.prefix}: unknown host '${name}' (have ${[...this.byName.keys()].join(', ')})`)
    return h
  }

  site (name: string): LabSite {
    const s = this.sites.find(x => x.name === name)
    if (s === undefined) throw new Error(`network lab ${this.prefix}: unknown site '${name}'`)
    return s
  }

  private resolve (host: LabHost | string): LabHost {
    if (this.closed) throw new Error(`network lab ${this.prefix} has been torn down`)
    return typeof host === 'string' ? this.host(host) : host
  }

  /** Writes the record atomically (tmp + rename) so cleanupStaleLabs never reads a partial file. */
  writeRecord (exclusive = false): void {
    const rec: LabRecord = {
      prefix: this.prefix,
      pid: process.pid,
      startTime: procStartTime(process.pid) ?? 0,
      namespaces: this.namespaces,
      procs: [...this.tracked].map(t => t.ref),
      createdAt: this.createdAt
    }
    const path = recordPath(this.prefix)
    if (exclusive) {
      writeFileSync(path, JSON.stringify(rec), { flag: 'wx' }) // reserves the prefix across processes
    } else {
      writeFileSync(path + '.tmp', JSON.stringify(rec))
      renameSync(path + '.tmp', path)
    }
  }

  private track (child: ChildProcess, exited: Promise<unknown>): void {
    const pid = child.pid
    if (pid === undefined) return
    const t: Tracked = { ref: { pid, startTime: procStartTime(pid) ?? 0 }, child, exited }
    this.tracked.add(t)
    void exited.then(() => { this.tracked.delete(t) })
    if (!this.closed) this.writeRecord()
  }

  async exec (host: LabHost | string, argv: string[], opts: ExecOpts = {}): Promise<ExecResult> {
    const h = this.resolve(host)
    return await runCapture(hostSpawnArgs(h, argv, opts.hostMounts), {
      timeoutMs: opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS,
      ...(opts.input === undefined ? {} : { input: opts.input }),
      onStart: child => {
        this.track(child, new Promise(resolve => { child.once('close', resolve); child.once('error', resolve) }))
      }
    })
  }

  spawn (host: LabHost | string, argv: string[], opts: SpawnOpts = {}): LabProcess {
    const h = this.resolve(host)
    const { hostMounts, ...startOpts } = opts
    const proc = startProcess(hostSpawnArgs(h, argv, hostMounts), startOpts)
    this.track(proc.child, proc.exited)
    return proc
  }

  private podCount = new Map<string, number>()

  /** /etc/netns/<ns> directories made for pods' resolv.conf; removed at teardown */
  private etcDirs: string[] = []

  async addPod (hostName: string, opts: PodOptions = {}): Promise<LabPod> {
    const node = this.resolve(hostName)
    const site = this.sites.find(x => x.name === node.site)
    if (site === undefined || node === site.router) throw new Error(`network lab: addPod: ${hostName} is not a site host`)
    const k = (this.podCount.get(node.name) ?? 0) + 1
    this.podCount.set(node.name, k)
    const [, a, , d] = node.ip.split('.').map(Number) as [number, number, number, number]
    const ip = `10.${a}.${100 + d - 10}.${k + 1}`
    const pod: LabPod = { name: `${node.name}-pod${k}`, ns: `${this.prefix}${node.name}p${k}`, ip, ...(node.site != null ? { site: node.site } : {}), node: node.name }
    this.byName.set(pod.name, pod)
    this.namespaces.push(pod.ns)
    this.writeRecord()
    const hostIf = `p${k}`
    await run('ip', ['-batch', '-'], `netns add ${pod.ns}\nlink add ${hostIf} netns ${node.ns} type veth peer name eth0 netns ${pod.ns}\n`)
    await run('ip', ['-n', pod.ns, '-batch', '-'], ['link set lo up', `addr add ${ip}/32 dev eth0`, 'link set eth0 up',
      'route add 169.254.1.1 dev eth0 scope link', 'route add default via 169.254.1.1 dev eth0'].join('\n') + '\n')
    await run('ip', ['-n', node.ns, '-batch', '-'], [`link set ${hostIf} up`, `route add ${ip}/32 dev ${hostIf}`].join('\n') + '\n')
    await run('ip', ['netns', 'exec', node.ns, 'sysctl', '-qw', `net.ipv4.conf.${hostIf}.proxy_arp=1`, 'net.ipv4.ip_forward=1'])
    if (opts.resolvConf != null) {
      const dir = `/etc/netns/${pod.ns}`
      mkdirSync(dir, { recursive: true })
      this.etcDirs.push(dir)
      writeFileSync(join(dir, 'resolv.conf'), opts.resolvConf)
    }
    return pod
  }

  async portForward (siteName: string, proto: 'tcp' | 'udp', publicPort: number, hostName: string, hostPort: number): Promise<void> {
    const site = this.site(siteName)
    const target = this.host(hostName)
    if (target.site !== site.name || target === site.router) {
      throw new Error(`network lab: portForward target ${hostName} is not a host of site ${siteName}`)
    }
    // The FORWARD chain already accepts NEW connections in ctstate DNAT.
    const rules = `*nat\n-A PREROUTING -i wan0 -d ${site.publicIp} -p ${proto} --dport ${publicPort} ` +
      `-j DNAT --to-destination ${target.ip}:${hostPort}\nCOMMIT\n`
    await run('ip', ['netns', 'exec', site.router.ns, 'iptables-restore', '--noflush'], rules)
  }

  teardown (): Promise<void> {
    this.teardownPromise ??= this.doTeardown()
    return this.teardownPromise
  }

  private async doTeardown (): Promise<void> {
    this.closed = true
    const live = [...this.tracked].filter(t => t.child.exitCode === null && t.child.signalCode === null)
    for (const t of live) signalRef(t.ref, 'SIGTERM')
    const allExited = Promise.all(live.map(async t => await t.exited))
    const timeout = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms).unref())
    await Promise.race([allExited, timeout(KILL_GRACE_MS)])
    for (const t of live) signalRef(t.ref, 'SIGKILL')
    await Promise.race([allExited, timeout(KILL_GRACE_MS)])
    await deleteNamespaces(this.namespaces)
    this.removeEtcDirs()
    try { unlinkSync(recordPath(this.prefix)) } catch { /* already gone */ }
    liveLabs.delete(this)
  }

  private removeEtcDirs (): void {
    for (const d of this.etcDirs) rmSync(d, { recursive: true, force: true })
    this.etcDirs = []
  }

  /** Synchronous teardown for signal / exit handlers. */
  teardownSync (graceMs: number): void {
    this.closed = true
    killRefsSync([...this.tracked].map(t => t.ref), graceMs)
    deleteNamespacesSync(this.namespaces)
    this.removeEtcDirs()
    try { unlinkSync(recordPath(this.prefix)) } catch { /* already gone */ }
    liveLabs.delete(this)
  }
}

let prereqsOk: Promise<void> | undefined

function checkPrereqs (): Promise<void> {
  prereqsOk ??= (async () => {
    if (process.getuid?.() !== 0) {
      throw new Error('network lab: must run as root (needs CAP_NET_ADMIN/CAP_SYS_ADMIN for network namespaces)')
    }
    await run('ip', ['-V'])
    await run('iptables', ['--version'])
    await run('iptables-restore', ['--version'])
  })()
  const p = prereqsOk
  p.catch(() => { prereqsOk = undefined })
  return p
}

export async function createLab (spec: LabSpec, opts: { onSignalTeardown?: boolean } = {}): Promise<Lab> {
  const t0 = performance.now()
  await checkPrereqs()
  await cleanupStaleLabs()
  if (spec.prefix !== undefined && !PREFIX_RE.test(spec.prefix)) {
    throw new Error(`network lab: bad prefix '${spec.prefix}' (want ${PREFIX_RE})`)
  }
  plan(spec, 'x') // validate the spec before touching anything

  mkdirSync(RECORD_DIR, { recursive: true })
  const existing = new Set(await listNamespaces())
  let lab: LabImpl | undefined
  let p: Plan | undefined
  for (let attempt = 0; lab === undefined; attempt++) {
    const prefix = spec.prefix ?? randomPrefix()
    p = plan(spec, prefix)
    const clash = p.namespaces.find(n => existing.has(n))
    const candidate = new LabImpl(prefix, p, opts.onSignalTeardown ?? true)
    try {
      if (clash !== undefined) throw Object.assign(new Error(`namespace ${clash} exists`), { code: 'EEXIST' })
      candidate.writeRecord(true)
      lab = candidate
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code !== 'EEXIST') throw e
      if (spec.prefix !== undefined || attempt >= 10) {
        throw new Error(`network lab: prefix ${prefix} is already in use (${(e as Error).message})`)
      }
    }
  }
  if (p === undefined) throw new Error('unreachable')

  liveLabs.add(lab)
  installHooks(lab.signalTeardown)
  try {
    await run('ip', ['-batch', '-'], p.rootBatch.join('\n') + '\n')
    await Promise.all([...p.nsBatches].map(async ([ns, lines]) => {
      await run('ip', ['-n', ns, '-batch', '-'], lines.join('\n') + '\n')
    }))
    await Promise.all([...p.routerRules].map(async ([ns, rules]) => {
      await Promise.all([
        run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']),
        run('ip', ['netns', 'exec', ns, 'iptables-restore', '--noflush'], rules)
      ])
    }))
  } catch (e) {
    await lab.teardown() // all planned namespaces were verified absent before, so deleting them is safe
    throw e
  }
  lab.setupMs = performance.now() - t0
  return lab
}
