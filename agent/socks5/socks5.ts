// Composition of the SOCKS5 capability: credentials from their files, the listen addresses on the
// agent's bridge, the node side on the tunnel (other agents reach this node's allowed ports) and
// this agent's SOCKS5 listener, with their metrics.
import type { AgentConfig } from '../../shared/config.ts'
import { parseHostPort } from '../../shared/host-port.ts'
import type { Logger } from '../../shared/logging.ts'
import type { Metrics } from '../../shared/metrics.ts'
import { ensureListenAddress } from '../../shared/net-device.ts'
import type { Catalog } from '../catalog/catalog.ts'
import type { PeerDirectory } from '../tunnel/directory.ts'
import type { TunnelApi } from '../tunnel/tunnel.ts'
import { credentialVerifier, loadCredentials } from './auth.ts'
import { Socks5Metrics } from './metrics.ts'
import { checkDialAddresses, NodeServer, type OwnNode } from './node-server.ts'
import { SOCKS5_NODE_PROTOCOL } from './node-wire.ts'
import { Socks5Server, type NodeKind } from './server.ts'
import { serviceName } from './targets.ts'
import { serviceKey } from '../catalog/store.ts'

/**
 * What a name is to SOCKS5: this node, a peer (in the directory), a Node without an agent (asked
 * of the API: nodes), or nothing. A name that is a known Service is not asked about: every new
 * name costs a GET of the Node (cached 30 s), and a client using Services by name would make
 * each agent GET a Node per Service every 30 s. Such a name, if also a Node without an agent,
 * reaches the Service instead of a "no agent" refusal.
 */
export function nodeKindOf (o: { nodeName: string, directory: Pick<PeerDirectory, 'byName'>, nodes?: NodeLookup, isService: (name: string) => boolean }): (name: string) => Promise<NodeKind | undefined> {
  return async (name) => {
    if (name === o.nodeName) return 'self'
    if (o.directory.byName(name) != null) return 'peer'
    if (o.nodes != null && !o.isService(name) && await o.nodes.exists(name)) return 'no-agent'
    return undefined
  }
}

export type Socks5Config = NonNullable<AgentConfig['socks5']>

/** Node names the cluster knows (agent/catalog/node-lookup.ts asks the API on demand). */
export interface NodeLookup { exists: (name: string) => Promise<boolean> }

export interface RunningSocks5 { server?: Socks5Server, nodeServer?: NodeServer, stop: () => Promise<void> }

export interface Socks5Options {
  config: Socks5Config
  nodeName: string
  clusterDomain: string
  /** endpoint IPs this node reaches without the tunnel (the proxy's directCidrs) */
  directCidrs: readonly string[]
  tunnel: TunnelApi
  directory: PeerDirectory
  catalog?: Catalog
  /** whether a Node of this name exists (asked for names not in the peer directory): "no agent there" vs unknown */
  nodes?: NodeLookup
  log: Logger
  metrics: Metrics
}

const isLinkLocal = (ip: string): boolean => ip.startsWith('169.254.')

export async function startSocks5 (opts: Socks5Options): Promise<RunningSocks5> {
  const { config, log } = opts
  const verify = config.auth != null ? credentialVerifier(await loadCredentials(config.auth)) : undefined
  checkDialAddresses(config.dialAddresses)
  const metrics = new Socks5Metrics(opts.metrics)
  const own: OwnNode = { nodeName: opts.nodeName, allowedPorts: config.allowedPorts, dialAddresses: config.dialAddresses, connectTimeoutMs: config.connectTimeoutMs }

  let nodeServer: NodeServer | undefined
  if (config.acceptFromPeers) {
    const ns = nodeServer = new NodeServer({ node: own, log, metrics })
    let stopped = false
    await opts.tunnel.handle(SOCKS5_NODE_PROTOCOL, (stream, peer) => {
      if (stopped) { stream.abort(new Error('socks5 stopped')); return }
      ns.serve(stream, peer)
    }, { maxStreams: 4096 })
    const stopNodeServer = ns.stop.bind(ns)
    ns.stop = () => { stopped = true; stopNodeServer() }
  }

  let server: Socks5Server | undefined
  if (config.enabled) {
    const listen = config.listen.map((l) => parseHostPort(l))
    if (config.device !== '') {
      for (const ip of new Set(listen.map((l) => l.host).filter(isLinkLocal))) await ensureListenAddress(config.device, ip)
    }
    const catalog = opts.catalog
    const nodeKind = nodeKindOf({
      nodeName: opts.nodeName, directory: opts.directory, ...(opts.nodes != null ? { nodes: opts.nodes } : {}),
      isService: (name) => {
        if (!config.services || catalog == null) return false
        const svc = serviceName(name, opts.clusterDomain)
        return svc != null && catalog.snapshot().services.has(serviceKey(svc.namespace, svc.name))
      }
    })
    try {
      server = await Socks5Server.start({
        listen, own, clusterDomain: opts.clusterDomain, nodeSuffix: config.nodeSuffix, services: config.services,
        handshakeTimeoutMs: config.handshakeTimeoutMs, connectTimeoutMs: config.connectTimeoutMs, maxConnections: config.maxConnections,
        ...(verify != null ? { verify } : {}),
        tunnel: opts.tunnel, nodeKind, ...(catalog != null ? { snapshot: () => catalog.snapshot() } : {}), directCidrs: opts.directCidrs, log, metrics
      })
    } catch (err) {
      nodeServer?.stop()
      throw err
    }
  }
  log.info({ listen: server?.addresses ?? 'off', auth: verify != null, allowedPorts: config.allowedPorts, nodeSuffix: config.nodeSuffix || null, services: config.services && opts.catalog != null, acceptFromPeers: config.acceptFromPeers }, 'SOCKS5 ready')
  return {
    ...(server != null ? { server } : {}),
    ...(nodeServer != null ? { nodeServer } : {}),
    stop: async () => {
      nodeServer?.stop()
      await server?.stop()
    }
  }
}
