// Configuration: a YAML file plus command-line flags, validated with zod. Every error names
// the field (`relays[0].udpPort: ...`) so a bad config is fixed in one look.
import { readFile } from 'node:fs/promises'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'

import { ConfigError } from './errors.ts'
import { splitHostPort } from './host-port.ts'
import { peerIdFromCertificateFile } from './relay-certificate.ts'
import { MAX_KEEPALIVE_MS, MIN_KEEPALIVE_MS } from './wire/rendezvous.ts'
export { ConfigError }

// names and IP literals only (no '_', no spaces): a listen address or a resolver, not a URL
const hostPort = z.string().refine((s) => { const hp = splitHostPort(s); return hp != null && /^[a-zA-Z0-9.:-]+$/.test(hp.host) }, 'expected host:port')
export const port = z.number().int().min(0).max(65535)
const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])

/**
 * A relay: its address and who it is, as its peer id or as its certificate (the Helm chart's
 * generated relay identity, mounted from a ConfigMap), whose Ed25519 key gives the peer id. The
 * certificate file is read while the config loads, so the parsed relay always has its peerId.
 */
export const RelayRef = z.object({
  /** the relay's public IPv4 address (the tunnel dials /ip4/<host>/...) */
  host: z.ipv4('expected the relay\'s IPv4 address'),
  peerId: z.string().min(40, 'expected a libp2p peer id (12D3Koo...)').optional(),
  /** the relay's X.509 certificate (PEM) holding its Ed25519 public key: the peer id is derived from it */
  certificateFile: z.string().min(1, 'expected the path of the relay\'s certificate (PEM)').optional(),
  tcpPort: port.default(4001),
  udpPort: port.default(4002)
}).strict().transform((r, ctx) => {
  const { peerId, certificateFile, ...rest } = r
  if (peerId != null && certificateFile != null) {
    ctx.addIssue({ code: 'custom', path: ['certificateFile'], message: 'give either peerId or certificateFile, not both' })
    return z.NEVER
  }
  if (certificateFile == null) {
    if (peerId != null) return { ...rest, peerId }
    ctx.addIssue({ code: 'custom', path: ['peerId'], message: 'required: the relay\'s peer id (12D3Koo...), or certificateFile (the relay\'s certificate, PEM)' })
    return z.NEVER
  }
  try {
    return { ...rest, peerId: peerIdFromCertificateFile(certificateFile), certificateFile }
  } catch (err: any) {
    ctx.addIssue({ code: 'custom', path: ['certificateFile'], message: String(err.message ?? err) })
    return z.NEVER
  }
})
export type RelayRef = z.infer<typeof RelayRef>

export const ServerConfig = z.object({
  identityFile: z.string().default('/var/lib/edgemesh/server.key'),
  pskFile: z.string().optional(),
  listen: z.object({
    host: z.string().default('0.0.0.0'),
    tcpPort: port.default(4001),
    udpPort: port.default(4002),
    http: hostPort.default('0.0.0.0:9090')
  }).strict().default({ host: '0.0.0.0', tcpPort: 4001, udpPort: 4002, http: '0.0.0.0:9090' }),
  /** public IPv4 addresses agents reach this relay at (announced in circuit reservations as /ip4/<a>/tcp/<tcpPort>) */
  announce: z.array(z.ipv4('expected the relay\'s public IPv4 address')).default([]),
  /** keepalive interval the relay asks agents to use (well under the 30 s UDP conntrack timeout) */
  keepaliveMs: z.number().int().min(MIN_KEEPALIVE_MS).max(MAX_KEEPALIVE_MS).default(2_000),
  maxAgents: z.number().int().positive().default(10_000),
  /** what one member may take from the relay; each refusal counts in edgemesh_relay_refusals_total{reason} */
  limits: z.object({
    /**
     * agents registered from one source IP (one site's NAT); maxAgents bounds the total. Unset:
     * maxAgents with a PSK (each registration proves membership), 256 without (server/limits.ts perIpLimits)
     */
    maxAgentsPerIp: z.number().int().positive().optional(),
    /** new agents (registrations, TCP connections) accepted from one source IP per second: a site's mass join, not its size */
    joinsPerIpPerSecond: z.number().positive().max(100_000).default(100),
    /** connect requests (candidate queries) per agent: sustained rate and burst of a token bucket */
    connectsPerSecond: z.number().positive().max(100_000).default(20),
    connectBurst: z.number().int().positive().max(100_000).default(100),
    /** blind UDP relay pairs one agent may hold open as the caller, and in total */
    relayPairsPerAgent: z.number().int().positive().default(256),
    maxRelayPairs: z.number().int().positive().default(20_000),
    /** circuit relay (TCP) reservations in total and per source IP (one per peer id, always); per IP unset: as maxAgentsPerIp */
    maxReservations: z.number().int().positive().default(10_000),
    maxReservationsPerIp: z.number().int().positive().optional(),
    /** a reservation not refreshed (agents refresh 5 min before expiry) frees its slot after this */
    reservationTtlSeconds: z.number().int().min(600).max(86_400).default(3_600),
    /** one relayed TCP circuit is closed after this long or this many bytes; 0: no limit (timers stop at ~24.8 days) */
    circuitDurationSeconds: z.number().int().min(0).max(2_147_483).default(86_400),
    circuitDataBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(64 * 2 ** 30)
  }).strict().prefault({}),
  logLevel: logLevel.default('info')
}).strict()
export type ServerConfig = z.infer<typeof ServerConfig>

/** The agent's fields; AgentConfig adds the checks across sections (pick fields from this one). */
export const AgentConfigFields = z.object({
  nodeName: z.string().min(1).max(253).regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'expected a Kubernetes node name (lowercase RFC 1123)'),
  identityFile: z.string().default('/var/lib/edgemesh/agent.key'),
  pskFile: z.string().optional(),
  listen: z.object({
    host: z.string().default('0.0.0.0'),
    udpPort: port.default(4003),
    tcpPort: port.default(4004)
  }).strict().default({ host: '0.0.0.0', udpPort: 4003, tcpPort: 4004 }),
  /** where `edgemesh status` / `edgemesh ping` reach this agent */
  controlSocket: z.string().default('/run/edgemesh/agent.sock'),
  metrics: hostPort.optional(),
  /** probe listener: GET /healthz (live) and /readyz (ready: catalog synced or from disk, DNS answers), e.g. 127.0.0.1:9095 */
  health: hostPort.optional(),
  relays: z.array(RelayRef).min(1, 'at least one relay is required'),
  /** static peer list: the standalone fallback when `kubernetes` is not configured */
  peersFile: z.string().optional(),
  /** Services, endpoints, nodes and the peer registry from the Kubernetes API */
  kubernetes: z.object({
    /** kubeconfig file; absent: in-cluster ServiceAccount (KUBERNETES_SERVICE_HOST + projected token) */
    kubeconfig: z.string().optional(),
    /**
     * apiserver URL overriding the kubeconfig's or the in-cluster one: edge nodes without
     * kube-proxy cannot reach the kubernetes Service's ClusterIP (e.g. https://203.0.113.5:6443)
     */
    apiServer: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' }).optional(),
    /** namespace of the mesh's peer records (coordination.k8s.io Leases named after nodes) */
    namespace: z.string().min(1).max(63).regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected a namespace name').default('edgemesh'),
    /** last good catalog, written atomically; served when the API is unreachable at start */
    snapshotFile: z.string().default('/var/lib/edgemesh/catalog.json'),
    /** at most one snapshot write per this many seconds (each start relists anyway; the file only serves offline starts) */
    snapshotIntervalSeconds: z.number().int().min(1).max(86_400).default(30),
    /**
     * written into the peer record's Lease (spec.leaseDurationSeconds) for older agents; nothing
     * renews records any more (they change only when their content does, and the garbage
     * collector removes a deleted Node's), so it no longer decides anything
     */
    leaseDurationSeconds: z.number().int().min(10).max(3600).default(40),
    /** give up on an initial sync after this long and serve the disk snapshot */
    syncTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
    /** a watch silent this long (no event, no bookmark) is presumed cut off by a partition and resumed */
    watchIdleSeconds: z.number().int().min(1).max(3600).default(150)
  }).strict().optional(),
  /** node-local DNS: cluster names from the catalog, everything else forwarded upstream */
  dns: z.object({
    /** where pods send queries (a link-local address on a device the agent owns) */
    listen: hostPort.default('169.254.96.16:53'),
    /** bridge device the agent creates and puts the listen address on; '' when the address exists already */
    device: z.string().max(15).regex(/^[a-zA-Z0-9_.-]*$/, 'expected a network device name').default('edgemesh0'),
    clusterDomain: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'expected a DNS domain like cluster.local').default('cluster.local'),
    /** upstream resolvers as host:port; default: the nameservers of resolvConf (never this server itself) */
    upstreams: z.array(hostPort).optional(),
    resolvConf: z.string().default('/etc/resolv.conf'),
    /** TTL of cluster answers */
    ttlSeconds: z.number().int().min(0).max(3600).default(5),
    /** per-attempt wait for an upstream before trying the next (or SERVFAIL) */
    upstreamTimeoutMs: z.number().int().min(50).max(10_000).default(1_000),
    cacheEntries: z.number().int().min(0).max(1_000_000).default(10_000)
  }).strict().optional(),
  /** the ClusterIP proxy: kernel DNAT for endpoints the node reaches, the tunnel for the rest (needs `kubernetes`) */
  proxy: z.object({
    /** the agent's address for Service traffic bound for the tunnel (the rules DNAT it here; link-local, on `device`) */
    listen: z.ipv4('expected an IPv4 address').default('169.254.96.16'),
    /** device the agent puts `listen` on (the DNS server's, by default); '' when the address exists already */
    device: z.string().max(15).regex(/^[a-zA-Z0-9_.-]*$/, 'expected a network device name').default('edgemesh0'),
    /** iptables backend; auto = the one holding the host's rules (kube-proxy, the CNI) */
    iptables: z.enum(['auto', 'nft', 'legacy']).default('auto'),
    /** prefix of the proxy's nat chains */
    chainPrefix: z.string().regex(/^[A-Z][A-Z0-9_]{0,14}$/, 'expected 1-15 upper-case letters, digits or _').default('EDGEMESH'),
    /** endpoint IPs this node reaches directly besides its own pods (a LAN whose pod networks are routed), as CIDRs */
    directCidrs: z.array(z.cidrv4('expected an IPv4 CIDR like 10.244.0.0/16')).default([]),
    /** steady-state spacing of rule syncs under churn (after a quiet period the first change, and up to 3 back to back, sync at once) */
    minSyncIntervalMs: z.number().int().min(0).max(60_000).default(250),
    /** check our hooks and top chain this often; rules changed outside the agent are rewritten (and all of them hourly) */
    resyncSeconds: z.number().int().min(5).max(3600).default(60),
    /** per endpoint: a dial that takes longer moves on to the next endpoint */
    connectTimeoutMs: z.number().int().min(100).max(60_000).default(3_000),
    /** a UDP flow that exchanged at most one datagram each way (DNS-like) is closed after this much silence */
    udpIdleSeconds: z.number().int().min(1).max(3600).default(10),
    /** a UDP flow that went back and forth (VoIP, QUIC, WireGuard) is closed after this much silence */
    udpStreamIdleSeconds: z.number().int().min(1).max(86_400).default(180),
    /** follow Istio DestinationRules (networking.istio.io/v1) for the load-balancing policy */
    destinationRules: z.boolean().default(true),
    /** remove the rules on a clean shutdown (Service traffic stops until an agent runs again) */
    cleanupOnExit: z.boolean().default(true)
  }).strict().optional(),
  tunnel: z.object({
    punchTimeoutMs: z.number().int().min(100).max(30_000).default(3_000),
    punchRetryMs: z.number().int().min(1_000).default(30_000),
    keepaliveMs: z.number().int().min(500).max(25_000).default(5_000),
    /** extra local addresses to offer peers (LAN candidates are discovered automatically) */
    advertise: z.array(z.ipv4('expected an IPv4 address')).default([])
  }).strict().default({ punchTimeoutMs: 3_000, punchRetryMs: 30_000, keepaliveMs: 5_000, advertise: [] }),
  /**
   * SOCKS5 to nodes and Services by name (`ssh -o ProxyCommand=...` to an edge node behind NAT).
   * The section's presence turns the node side on (other agents' SOCKS servers reach this node's
   * allowed ports); `enabled` is this agent's own SOCKS listener. See README, "SOCKS5".
   */
  socks5: z.object({
    /** this agent's SOCKS5 listener (reachable by every pod on the node at 169.254.96.16) */
    enabled: z.boolean().default(true),
    listen: z.array(hostPort).min(1, 'at least one listen address (or set enabled: false)').default(['169.254.96.16:10800']),
    /** bridge device the agent puts link-local (169.254.x.x) listen addresses on; '' when the address exists already */
    device: z.string().max(15).regex(/^[a-zA-Z0-9_.-]*$/, 'expected a network device name').default('edgemesh0'),
    /** `<node>.<nodeSuffix>` names a node too (ssh_config `Host *.edge`); '' turns suffixed names off */
    nodeSuffix: z.string().regex(/^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$/, 'expected a DNS suffix like edge, or \'\'').default('edge'),
    /** node ports reachable through SOCKS5; enforced by the target node's agent, checked locally first */
    allowedPorts: z.array(port.min(1)).min(1, 'at least one port (or remove the socks5 section)').default([22]),
    /** serve other agents' SOCKS connections to this node's allowedPorts */
    acceptFromPeers: z.boolean().default(true),
    /** this node's own addresses the agent dials for it, in order: loopback or an address of one of its interfaces */
    dialAddresses: z.array(z.union([z.ipv4(), z.ipv6()], { error: 'expected an IP address' })).min(1).default(['127.0.0.1']),
    /** Service targets (svc.ns, svc.ns.svc.<clusterDomain>) on the Service's own ports; needs kubernetes */
    services: z.boolean().default(true),
    handshakeTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
    connectTimeoutMs: z.number().int().min(100).max(600_000).default(15_000),
    maxConnections: z.number().int().min(1).max(1_000_000).default(1_024),
    /** RFC 1929 username/password, from files (a Secret volume, never the ConfigMap); absent: no authentication */
    auth: z.object({
      usernameFile: z.string().min(1),
      passwordFile: z.string().min(1)
    }).strict().optional()
  }).strict().optional(),
  /** serve the diagnostic transfer protocols (`edgemesh transfer`, tests, benchmarks) */
  diagnostics: z.boolean().default(false),
  logLevel: logLevel.default('info')
}).strict()

/** Sections that contradict each other are refused here, before anything starts. */
export const AgentConfig = AgentConfigFields.superRefine((c, ctx) => {
  if (c.proxy != null && c.kubernetes == null) {
    ctx.addIssue({ code: 'custom', path: ['proxy'], message: 'needs kubernetes (the proxy learns Services and endpoints from the Kubernetes API): add a kubernetes section or remove proxy' })
  }
})
export type AgentConfig = z.infer<typeof AgentConfig>

/** The first line of a message, for errors whose text spans lines (YAML's end "at line 2, column 1:" and a code frame). */
export function firstLine (message: string): string {
  return message.split('\n', 1)[0]!.trim().replace(/:$/, '')
}

/**
 * One line per invalid field, each complete on its own (file, field, problem), so a single bad
 * field is a single line and grep finds every one: `invalid configuration in f: a.b: problem`.
 */
export function formatZodError (err: z.ZodError, source: string): string {
  return err.issues.map((i) => {
    const path = i.path.reduce<string>((acc, p) => typeof p === 'number' ? `${acc}[${p}]` : acc === '' ? String(p) : `${acc}.${String(p)}`, '')
    return `invalid configuration in ${source}: ${path === '' ? '(root)' : path}: ${i.message.replace(/\s*\n\s*/g, ' ')}`
  }).join('\n')
}

/** Sets `a.b.c` in a nested object from a flag like --a.b.c=value (numbers/booleans coerced). */
export function applyOverride (target: Record<string, any>, dotted: string, raw: string, coerce = true): void {
  const parts = dotted.split('.')
  if (parts.some((p) => p === '__proto__' || p === 'constructor' || p === 'prototype')) throw new ConfigError(`--set ${dotted}: invalid key`)
  let obj = target
  for (const p of parts.slice(0, -1)) {
    if (typeof obj[p] !== 'object' || obj[p] === null) obj[p] = {}
    obj = obj[p]
  }
  const value: unknown = !coerce ? raw : raw === 'true' ? true : raw === 'false' ? false : /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw
  obj[parts.at(-1)!] = value
}

export async function loadConfig<S extends z.ZodType> (schema: S, opts: { file?: string, overrides?: Array<[string, string]> }): Promise<z.infer<S>> {
  let raw: Record<string, any> = {}
  const source = opts.file ?? 'flags'
  if (opts.file != null) {
    let text: string
    try { text = await readFile(opts.file, 'utf8') } catch (err: any) { throw new ConfigError(`cannot read config file ${opts.file}: ${err.message}`) }
    try { raw = parseYaml(text) ?? {} } catch (err: any) { throw new ConfigError(`config file ${opts.file} is not valid YAML: ${firstLine(err.message)}`) }
    if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`config file ${opts.file}: expected a mapping at the top level`)
  }
  for (const [k, v] of opts.overrides ?? []) applyOverride(raw, k, v)
  let parsed = schema.safeParse(raw)
  // flags arrive as text: a value coerced to a number where the schema wants a string (say
  // --set nodeName=1234) is put back as the string it was
  if (!parsed.success) {
    let retry = false
    for (const issue of parsed.error.issues) {
      const key = issue.path.join('.')
      const override = (opts.overrides ?? []).find(([k]) => k === key)
      if (override != null && issue.code === 'invalid_type' && issue.expected === 'string') { applyOverride(raw, key, override[1], false); retry = true }
    }
    if (retry) parsed = schema.safeParse(raw)
  }
  if (!parsed.success) throw new ConfigError(formatZodError(parsed.error, source))
  return parsed.data
}

const PSK_TAG = '/key/swarm/psk/1.0.0/'
const PSK_CODEC = '/base16/'

/**
 * What is wrong with a libp2p pre-shared key file (the format @libp2p/pnet decodes:
 * "/key/swarm/psk/1.0.0/", "/base16/", 64 hex digits, one per line), or undefined when nothing
 * is. pnet itself only checks the key line, and only once a connection is being protected.
 */
export function pskProblem (bytes: Uint8Array): string | undefined {
  const lines = Buffer.from(bytes).toString('utf8').split(/\r\n|\r|\n/)
  while (lines.length > 3 && lines.at(-1) === '') lines.pop() // trailing newlines
  if (lines[0] !== PSK_TAG) return `line 1 must be "${PSK_TAG}"`
  if (lines[1] !== PSK_CODEC) return `line 2 must be "${PSK_CODEC}"`
  const key = lines[2] ?? ''
  if (!/^[0-9a-fA-F]{64}$/.test(key)) return `line 3 must be the key as 64 hex digits (32 bytes), got ${key.length} characters${/^[0-9a-fA-F]*$/.test(key) ? '' : ' with non-hex ones'}`
  if (lines.length > 3) return 'unexpected text after the key (line 4)'
  return undefined
}

/** The PSK file's bytes (what pnet and the registration MAC use), validated. */
export async function loadPsk (file: string | undefined): Promise<Uint8Array | undefined> {
  if (file == null) return undefined
  let bytes: Uint8Array
  try {
    bytes = new Uint8Array(await readFile(file))
  } catch (err: any) {
    throw new ConfigError(`pskFile: cannot read ${file}: ${err.message}`)
  }
  const problem = pskProblem(bytes)
  if (problem != null) throw new ConfigError(`pskFile: ${file} is not a libp2p pre-shared key ("${PSK_TAG}", "${PSK_CODEC}", 64 hex digits, one per line): ${problem}`)
  return bytes
}
