// The serving side of the SOCKS5 node protocol: another agent asks this one for a port of this
// node. This agent is the authority for its node: only its own allowed ports, only its own
// addresses (dialAddresses, checked at start to be local), whatever the asking agent checked.
import type { Socket } from 'node:net'
import { networkInterfaces } from 'node:os'
import type { Stream } from '@libp2p/interface'
import { ConfigError } from '../../shared/config.ts'
import { LogThrottle } from '../../shared/log-throttle.ts'
import type { Logger } from '../../shared/logging.ts'
import { readPrefix, spliceSocketStream } from '../proxy/pipe.ts'
import { dial } from '../proxy/remote.ts'
import type { Socks5Metrics } from './metrics.ts'
import { decodeNodeRequest, NodeStatus, nodeStatusName, type NodeRequest } from './node-wire.ts'

export interface OwnNode {
  nodeName: string
  allowedPorts: readonly number[]
  /** this node's addresses, tried in order (a service bound to one address only refuses on the others) */
  dialAddresses: readonly string[]
  connectTimeoutMs: number
}

/** What a failed dial of this node's port means on the wire. */
export function statusOfDialError (err: Error & { code?: string }): NodeStatus {
  if (err.code === 'ECONNREFUSED') return NodeStatus.REFUSED
  if (/timed out/.test(err.message) || err.code === 'ETIMEDOUT') return NodeStatus.TIMEOUT
  if (err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH' || err.code === 'EADDRNOTAVAIL') return NodeStatus.UNREACHABLE
  return NodeStatus.FAILED
}

/** Connects to `port` on this node: each address in turn while they refuse; the last error otherwise. */
export async function dialOwnNode (node: OwnNode, port: number): Promise<Socket> {
  let last: Error = new Error('no dial address')
  const deadline = Date.now() + node.connectTimeoutMs
  for (const host of node.dialAddresses) {
    const left = deadline - Date.now()
    if (left <= 0) break
    try {
      return await dial(host, port, left)
    } catch (err) {
      last = err as Error
      if ((err as { code?: string }).code !== 'ECONNREFUSED') break
    }
  }
  throw last
}

/** dialAddresses must be this node's own: loopback, or an address on one of its interfaces. */
export function checkDialAddresses (addresses: readonly string[], local = localAddresses()): void {
  addresses.forEach((a, i) => {
    if (!a.startsWith('127.') && a !== '::1' && !local.has(a)) throw new ConfigError(`socks5.dialAddresses[${i}]: ${a} is not an address of this node (loopback or one of its interfaces): the agent dials only its own node`)
  })
}

function localAddresses (): Set<string> {
  const out = new Set<string>()
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address)
  return out
}

export class NodeServer {
  private readonly node: OwnNode
  private readonly allowed: Set<number>
  private readonly log: Logger
  private readonly metrics: Socks5Metrics
  private readonly open = new Set<Socket>()
  /** a peer's clients can repeat a refused request many times a second: counted always, logged once per 10 s */
  private readonly throttle = new LogThrottle(10_000)

  constructor (opts: { node: OwnNode, log: Logger, metrics: Socks5Metrics }) {
    this.node = opts.node
    this.allowed = new Set(opts.node.allowedPorts)
    this.log = opts.log
    this.metrics = opts.metrics
  }

  get openConnections (): number { return this.open.size }

  /** Handles one inbound node stream from `peer`. Never throws. */
  serve (stream: Stream, peer: { node: string }): void {
    void this.serveAsync(stream, peer).catch((err: Error) => {
      this.log.debug({ peer: peer.node, err: err.message }, 'socks5: node stream failed')
      stream.abort(err)
    })
  }

  private async serveAsync (stream: Stream, peer: { node: string }): Promise<void> {
    let req: NodeRequest
    let rest: Uint8Array
    try {
      ({ value: req, rest } = await readPrefix(stream, decodeNodeRequest, 5_000))
    } catch (err) {
      await this.answer(stream, NodeStatus.BAD_REQUEST, peer, undefined, (err as Error).message)
      stream.abort(err as Error)
      return
    }
    if (req.node !== this.node.nodeName) {
      await this.answer(stream, NodeStatus.NOT_THIS_NODE, peer, req, `asked for node ${req.node}, this is ${this.node.nodeName}`)
      return
    }
    if (!this.allowed.has(req.port)) {
      await this.answer(stream, NodeStatus.PORT_NOT_ALLOWED, peer, req, `port ${req.port} is not in socks5.allowedPorts [${[...this.allowed].join(', ')}]`)
      return
    }
    let socket: Socket
    try {
      socket = await dialOwnNode(this.node, req.port)
    } catch (err) {
      await this.answer(stream, statusOfDialError(err as Error), peer, req, (err as Error).message)
      return
    }
    if (stream.writeStatus !== 'writable') { socket.destroy(); return }
    this.metrics.remote.inc({ result: 'ok' })
    stream.send(Uint8Array.of(NodeStatus.OK))
    this.open.add(socket)
    try {
      const { up, down, failure } = await spliceSocketStream(socket, stream, undefined, rest)
      if (failure != null) {
        this.metrics.streamFailures.inc({ side: 'remote', cause: failure.cause })
        this.log.info({ peer: peer.node, port: req.port, cause: failure.cause, err: failure.error.message, up, down }, 'socks5: connection for a peer failed')
      }
    } finally { this.open.delete(socket) }
  }

  /** A refusal: counted, logged once with its reason (per peer, result and port every 10 s), answered, stream closed. */
  private async answer (stream: Stream, status: NodeStatus, peer: { node: string }, req: NodeRequest | undefined, reason: string): Promise<void> {
    const result = nodeStatusName(status)
    this.metrics.remote.inc({ result })
    if (this.throttle.shouldLog(`${peer.node}|${result}|${req?.port ?? ''}`, Date.now())) this.log.warn({ peer: peer.node, port: req?.port, result, reason }, 'socks5: refused a node request from a peer')
    if (stream.writeStatus === 'writable') stream.send(Uint8Array.of(status))
    await stream.close().catch(() => { stream.abort(new Error('close failed')) })
  }

  stop (): void { for (const s of this.open) s.destroy() }
}
