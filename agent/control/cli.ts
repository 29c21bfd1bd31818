// `edgemesh`: operator CLI talking to the local agent's control socket, in the spirit of
// `tailscale status` / `tailscale ping`.
import { request } from 'node:http'
import { parseCommandLine, UsageError } from '../../shared/cli-main.ts'
import { renderTable } from '../../shared/table.ts'
import { ConfigError } from '../../shared/errors.ts'
import type { PeerStatus, PingResult, RelayStatus } from '../tunnel/tunnel.ts'
// ping/transfer load multiaddr and the tunnel's diagnostics (~0.9 s): imported when used, so
// `edgemesh nc` (run by ssh for every connection) and the other commands start fast
import type { TransferReport } from './ping-transfer.ts'
import { parseNcArgs, runNc } from './nc.ts'
import { parseSshConfigArgs, sshConfigStanza } from './ssh-config.ts'

const USAGE = `usage: edgemesh [--socket PATH] <command> [--json]
  --socket PATH       the agent's control socket (its config's controlSocket; default
                      $EDGEMESH_SOCKET or /run/edgemesh/agent.sock)
commands:
  status              peers, the path in use (direct-udp, direct-tcp, relay-udp, relay-tcp), remote address, RTT
  ping <node> [-c N]  open (or reuse) the tunnel to <node> and time each phase: getting the connection,
                      opening the stream, N round trips (default 3, at most 100), the whole
  transfer <node> [--size 100M | --bytes N] [--direction send|receive] [--via ADDR]
                      move random bytes to (send, the default) or from (receive) <node> and check
                      their SHA-256 on both ends; prints bytes, time, Mbit/s and the path.
                      Default size 16M (K/M/G: powers of 1024). --via 203.0.113.5:4004 dials that
                      TCP address of <node> for this transfer only. Both agents need
                      \`diagnostics: true\` in their config.
  catalog             the Kubernetes catalog: source (api or disk), counts, peer records and when they were written
  proxy               the ClusterIP proxy: iptables backend, last sync, the service ports the agent carries
  nc <node|service> <port> [--proxy HOST:PORT] [--user NAME --password-file FILE] [--connect-timeout S]
                      a stdio pipe to <node> (or a Service, svc.ns) through the agent's SOCKS5 proxy,
                      for ssh: -o ProxyCommand="edgemesh nc %h %p". Default proxy 169.254.96.16:10800
                      ($EDGEMESH_SOCKS_PROXY; credentials also from $EDGEMESH_SOCKS_USER/_PASSWORD).
                      A refusal is one line with its reason; exit 1 (2 for a bad command line)
  ssh-config [--suffix edge] [--proxy HOST:PORT] [--command CMD] [--user NAME --password-file FILE]
                      prints a ~/.ssh/config stanza: Host *.<suffix> through \`edgemesh nc\`
  --json              any command: machine-readable output
`

export async function callAgent<T> (socketPath: string, method: string, path: string, timeoutMs = 30_000): Promise<T> {
  return await new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let body: any
        try { body = JSON.parse(text) } catch { body = text }
        if ((res.statusCode ?? 500) >= 400) reject(Object.assign(new Error(body?.error ?? `agent answered ${res.statusCode}`), { status: res.statusCode }))
        else resolve(body as T)
      })
    })
    req.on('timeout', () => { req.destroy(new Error('agent did not answer in time')) })
    req.on('error', (err: any) => {
      reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new Error(`no agent at ${socketPath} (is edgemesh-agent running? use --socket)`) : err)
    })
    req.end()
  })
}

const ms = (v: number | null | undefined): string => v == null ? '-' : `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`

export function formatStatus (s: { node: string, peerId: string, relays: RelayStatus[], peers: PeerStatus[] }): string {
  const relays = renderTable(['RELAY', 'ROLE', 'UDP', 'OBSERVED AS', 'CIRCUIT', 'RTT'],
    s.relays.map((r) => [r.host, r.role, r.udp, r.observed, r.circuit, ms(r.rttMs)]))
  const peers = renderTable(['NODE', 'PEER ID', 'PATH', 'REMOTE', 'RTT', 'OTHER PATHS'],
    s.peers.map((p) => [p.node, `${p.peerId.slice(0, 8)}…${p.peerId.slice(-4)}`, p.path, p.remote, ms(p.rttMs), p.paths.slice(1).map((x) => x.path).join(',') || '-']))
  return `${s.node} (${s.peerId})\n\n${relays}\n\n${peers}\n`
}

export function formatCatalog (c: { source: string, synced: boolean, version: number, counts: Record<string, number>, peers: Array<{ node: string, peerId: string, homeRelay?: string, writtenSecondsAgo: number | null }> }): string {
  const counts = Object.entries(c.counts).map(([k, v]) => `${v} ${k}`).join(', ')
  const source = c.source === 'disk' ? 'disk snapshot (the Kubernetes API is unreachable)' : c.source === 'api' ? 'Kubernetes API' : c.source
  // records are rewritten only when they change: WRITTEN is not a heartbeat (`status` shows who is reachable)
  const short = (id: string): string => `${id.slice(0, 8)}…${id.slice(-4)}`
  const peers = renderTable(['NODE', 'PEER ID', 'HOME RELAY', 'WRITTEN'],
    c.peers.map((p) => [p.node, short(p.peerId), p.homeRelay != null ? short(p.homeRelay) : '-', p.writtenSecondsAgo == null ? '-' : `${p.writtenSecondsAgo} s ago`]))
  return `catalog from ${source}, version ${c.version}: ${counts}\n\n${peers}\n`
}

export function formatProxy (p: { backend: string, servicePorts: number, syncs: number, lastSync?: { kind: string, ms: number, restoreMs: number, written: number, bytes: number }, listeners: Array<{ service: string, id: string, address: string, endpoints: number, connections: number }> }): string {
  const last = p.lastSync == null ? 'no sync yet' : `last sync ${p.lastSync.kind} in ${p.lastSync.ms} ms (iptables-restore ${p.lastSync.restoreMs} ms, ${p.lastSync.written} chains, ${p.lastSync.bytes} bytes)`
  const rows = renderTable(['SERVICE', 'PORT', 'AGENT LISTENER', 'ENDPOINTS', 'OPEN'],
    p.listeners.map((l) => [l.service, l.id, l.address, String(l.endpoints), String(l.connections)]))
  return `iptables ${p.backend}, ${p.servicePorts} service ports, ${p.syncs} syncs, ${last}\nservice ports the agent carries (tunnel endpoints or agent-only policies; the rest is kernel DNAT):\n\n${rows}\n`
}

/** how many arguments each command takes after its name */
const COMMAND_ARGS: Record<string, number> = { status: 0, catalog: 0, proxy: 0, ping: 1, transfer: 1, nc: 2, 'ssh-config': 0 }

export async function main (argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine({
    args: argv,
    allowPositionals: true,
    options: {
      socket: { type: 'string', default: process.env.EDGEMESH_SOCKET ?? '/run/edgemesh/agent.sock' },
      json: { type: 'boolean' },
      count: { type: 'string', short: 'c', default: '3' },
      bytes: { type: 'string' },
      size: { type: 'string' },
      direction: { type: 'string' },
      via: { type: 'string' },
      proxy: { type: 'string' },
      user: { type: 'string' },
      'password-file': { type: 'string' },
      'connect-timeout': { type: 'string' },
      suffix: { type: 'string' },
      command: { type: 'string' },
      help: { type: 'boolean', short: 'h' }
    }
  })
  const [cmd, arg] = positionals
  const socket = values.socket!
  if (values.help === true || cmd == null) { process.stdout.write(USAGE); return }
  const takes = COMMAND_ARGS[cmd]
  if (takes == null) throw new UsageError(`unknown command "${cmd}" (see edgemesh --help)`)
  if (positionals.length > 1 + takes) throw new UsageError(`${cmd}: unexpected argument "${positionals[1 + takes]}" (see edgemesh --help)`)
  if (cmd === 'nc') {
    await runNc(parseNcArgs(positionals.slice(1), values))
    return
  }
  if (cmd === 'ssh-config') {
    process.stdout.write(sshConfigStanza(parseSshConfigArgs(values)))
    return
  }
  if (cmd === 'status') {
    const s = await callAgent<any>(socket, 'GET', '/status')
    process.stdout.write(values.json === true ? JSON.stringify(s, null, 2) + '\n' : formatStatus(s))
    return
  }
  if (cmd === 'catalog') {
    const c = await callAgent<any>(socket, 'GET', '/catalog')
    process.stdout.write(values.json === true ? JSON.stringify(c, null, 2) + '\n' : formatCatalog(c))
    return
  }
  if (cmd === 'proxy') {
    const p = await callAgent<any>(socket, 'GET', '/proxy')
    process.stdout.write(values.json === true ? JSON.stringify(p, null, 2) + '\n' : formatProxy(p))
    return
  }
  if (cmd === 'ping') {
    if (arg == null) throw new ConfigError('ping: missing <node> (usage: edgemesh ping <node> [-c N])')
    const { formatPong, parsePingCount } = await import('./ping-transfer.ts')
    const count = parsePingCount(values.count!)
    const r = await callAgent<PingResult>(socket, 'POST', `/ping?node=${encodeURIComponent(arg)}&count=${count}`)
    process.stdout.write(values.json === true ? JSON.stringify(r) + '\n' : formatPong(r) + '\n')
    return
  }
  if (cmd === 'transfer') {
    const { diagnosticsOffMessage, formatTransfer, parseTransferArgs, transferQuery } = await import('./ping-transfer.ts')
    const t = parseTransferArgs(arg, values)
    let r: TransferReport
    try {
      // no answer until the bytes have moved: allow for a slow path (about 1 Mbit/s)
      r = await callAgent<TransferReport>(socket, 'POST', transferQuery(t), 60_000 + t.bytes / 125)
    } catch (err: any) {
      if (err?.status === 404) throw new Error(diagnosticsOffMessage(socket))
      throw err
    }
    process.stdout.write(values.json === true ? JSON.stringify(r) + '\n' : formatTransfer(r, t.bytes) + '\n')
    if (!r.match) process.exitCode = 1
    return
  }
  throw new UsageError(`unknown command "${cmd}" (see edgemesh --help)`)
}
