// edgemesh-server: the relay node's composition root. One libp2p host (TCP + circuit relay v2)
// and one UDP socket (rendezvous + blind relay), plus /healthz and /metrics.
import { loadConfig, loadPsk, ServerConfig } from '../shared/config.ts'
import { loadOrCreateIdentity } from '../shared/identity.ts'
import { ed25519Signer } from '../shared/ed25519.ts'
import { parseDaemonArgs, reportStacksAt } from '../shared/cli-main.ts'
import { createLogger } from '../shared/logging.ts'
import { Metrics } from '../shared/metrics.ts'
import { createUdx } from '../shared/udx.ts'
import { boundAddress, startHttp, stopHttp } from '../shared/http.ts'
import { parseHostPort } from '../shared/host-port.ts'
import { StopStack } from '../shared/stop-stack.ts'
import { BlindRelay } from './blind-relay.ts'
import { RendezvousServer } from './rendezvous.ts'
import { startRelayHost } from './relay-host.ts'
import { exportRelayLoad } from './relay-metrics.ts'
import { connectionLimits, perIpLimits } from './limits.ts'

export interface RunningServer { stop: () => Promise<void>, peerId: string }

export async function startServer (config: ServerConfig): Promise<RunningServer> {
  const log = createLogger({ name: 'edgemesh-server', level: config.logLevel })
  const metrics = new Metrics()
  // the key file is checked before anything is created or bound
  const psk = await loadPsk(config.pskFile)
  const identity = await loadRelayIdentity(config.identityFile)
  if (identity.created) log.info({ keyFile: config.identityFile }, 'generated a new relay identity')
  // unset per-IP caps follow from whether registrations prove membership (server/limits.ts)
  const limits = { ...config.limits, ...perIpLimits(config.limits, { maxAgents: config.maxAgents, maxReservations: config.limits.maxReservations }, psk != null) }
  if (psk == null) log.warn('NO PRE-SHARED KEY: this relay is open to any key. Anyone who reaches it can register, learn the addresses of registered agents, take blind-relay pairs and use the circuit relay. Set pskFile to the mesh\'s swarm.key (the Helm chart creates one by default; see manifests/README.md, "Cluster membership (PSK)")')

  // a part that fails to start stops the ones already started; errors name the config field
  const parts = new StopStack((part, err) => { log.warn({ part, err: (err as Error)?.message ?? String(err) }, 'stop failed; stopping the rest') })
  try {
    const udx = createUdx()
    const socket = udx.createSocket()
    parts.push('listen.udpPort', async () => { await socket.close() })
    await parts.step('listen.udpPort', () => { socket.bind(config.listen.udpPort, config.listen.host) })
    const relay = new BlindRelay({ udx, socket, log: log.child({ component: 'blind-relay' }), metrics, maxPairs: config.limits.maxRelayPairs, maxPairsPerAgent: config.limits.relayPairsPerAgent })
    parts.push('blind relay', () => { relay.stop() })
    const rendezvous = new RendezvousServer({
      socket, relay, metrics, log: log.child({ component: 'rendezvous' }), sign: ed25519Signer(identity.privateKey),
      keepaliveMs: config.keepaliveMs, maxAgents: config.maxAgents, limits, ...(psk != null ? { psk } : {})
    })
    parts.push('rendezvous', () => { rendezvous.stop() })
    socket.on('message', (buf, from) => { rendezvous.onDatagram(buf, from) })

    const host = await parts.start('listen.tcpPort',
      async () => await startRelayHost({ privateKey: identity.privateKey, host: config.listen.host, tcpPort: config.listen.tcpPort, announce: config.announce, limits, connections: connectionLimits(config.maxAgents, limits.maxReservations, limits.joinsPerIpPerSecond, limits), log: log.child({ component: 'circuit-relay' }), metrics, ...(psk != null ? { psk } : {}) })
        .catch((err: Error) => { throw new Error(listenFailure(err.message), { cause: err }) }),
      async (h) => { await h.stop() })
    host.addEventListener('connection:open', () => { metrics.peerConnections.set({ path: 'relay-tcp' }, host.getConnections().length) })
    host.addEventListener('connection:close', () => { metrics.peerConnections.set({ path: 'relay-tcp' }, host.getConnections().length) })
    exportRelayLoad(metrics, {
      reservations: () => host.services.relay.reservations.size,
      streamProtocols: () => host.getConnections().flatMap((c) => c.streams.map((s) => s.protocol)),
      blindRelayBytes: () => relay.forwardedBytes()
    })

    const http = await parts.start('listen.http', async () => await startHttp(parseHostPort(config.listen.http), {
      'GET /healthz': async () => ({
        body: { status: 'ok', peerId: identity.peerId.toString(), bootId: rendezvous.bootId, registeredAgents: rendezvous.registeredCount, blindRelaySessions: relay.size, tcpConnections: host.getConnections().length }
      }),
      // ready: the UDP socket (rendezvous, blind relay) and the TCP host (circuit relay) are bound
      'GET /readyz': async () => {
        const reasons = relayListenerProblems(socket, host)
        return { status: reasons.length === 0 ? 200 : 503, body: { ready: reasons.length === 0, reasons } }
      },
      'GET /metrics': async () => ({ type: metrics.registry.contentType, body: await metrics.registry.metrics() })
    }, (err) => { log.error({ err }, 'http handler failed') }, { metrics }), async (http) => { await stopHttp(http) })

    log.info({
      peerId: identity.peerId.toString(),
      // bound addresses: the real ports when the config asked for 0 (any free port)
      udp: `${config.listen.host}:${socket.address().port}`,
      tcp: host.getMultiaddrs().map(String),
      http: boundAddress(http),
      psk: psk != null
    }, 'edgemesh-server ready')
  } catch (err) {
    await parts.unwind()
    throw err
  }

  return { peerId: identity.peerId.toString(), stop: async () => { await parts.unwind() } }
}

/** Why the relay cannot serve: a listener that is not bound (empty when both are). */
function relayListenerProblems (socket: { address: () => { port: number } }, host: { getMultiaddrs: () => unknown[] }): string[] {
  const reasons: string[] = []
  try {
    if (socket.address().port === 0) reasons.push('listen.udpPort: not bound')
  } catch (err) {
    reasons.push(`listen.udpPort: ${(err as Error).message}`)
  }
  if (host.getMultiaddrs().length === 0) reasons.push('listen.tcpPort: not listening')
  return reasons
}

/** The relay's key: a libp2p key file (created on first start) or the chart's PEM key; a bad one names the field. */
async function loadRelayIdentity (file: string): ReturnType<typeof loadOrCreateIdentity> {
  try {
    return await loadOrCreateIdentity(file)
  } catch (err: any) {
    throw new Error(`identityFile: ${String(err.message ?? err)}`, { cause: err })
  }
}

/** libp2p's listen failure carries a whole stack in its message: keep the cause (`address already in use 0.0.0.0:4001`). */
function listenFailure (message: string): string {
  const m = /listen E[A-Z]+: (.+?) (\S+:\d+)/.exec(message)
  return m != null ? `${m[1]!} ${m[2]!}` : message.split(' at ')[0]!
}

const USAGE = `usage: edgemesh-server [--config FILE] [--set key.path=value ...] [--print-peer-id]
  --config FILE        YAML configuration (see manifests/ and README)
  --set a.b=value      override one field, e.g. --set listen.udpPort=4002
  --print-peer-id      create the identity key if missing, print the peer id, exit
`

export async function main (argv: string[]): Promise<void> {
  const args = parseDaemonArgs(argv, USAGE)
  if (args.help) return
  const source = { ...(args.configFile != null ? { file: args.configFile } : {}), overrides: args.overrides }
  const config = await loadConfig(ServerConfig, source)
  reportStacksAt(config.logLevel)
  if (args.printPeerId) {
    process.stdout.write(`${(await loadRelayIdentity(config.identityFile)).peerId.toString()}\n`)
    return
  }
  const server = await startServer(config)
  const shutdown = (): void => { server.stop().then(() => process.exit(0), () => process.exit(1)) }
  process.once('SIGTERM', shutdown)
  process.once('SIGINT', shutdown)
}
