// The SOCKS5 node protocol on the tunnel, free of I/O: an agent asks another agent to connect to
// a port of that agent's own node. The stream starts with one request naming the node it is
// meant for (a directory mix-up is refused, never served) and the port; the serving agent
// answers one status byte and, on OK, the stream carries the connection's bytes both ways.
import { latin1 } from './wire.ts'

export const SOCKS5_NODE_PROTOCOL = '/edgemesh/socks5-node/1.0.0'
const VERSION = 1

export const NodeStatus = { OK: 0, PORT_NOT_ALLOWED: 1, REFUSED: 2, TIMEOUT: 3, UNREACHABLE: 4, BAD_REQUEST: 5, NOT_THIS_NODE: 6, FAILED: 7 } as const
export type NodeStatus = typeof NodeStatus[keyof typeof NodeStatus]
const NAMES = ['ok', 'port-not-allowed', 'refused', 'timeout', 'unreachable', 'bad-request', 'not-this-node', 'failed']
export const nodeStatusName = (s: number): string => NAMES[s] ?? `unknown(${s})`

export interface NodeRequest { node: string, port: number }

/** [version][port u16][name length u8][node name] */
export function encodeNodeRequest (r: NodeRequest): Uint8Array {
  const name = Buffer.from(r.node, 'latin1')
  if (name.length < 1 || name.length > 253) throw new Error(`socks5 node request: node name of ${name.length} bytes`)
  if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535) throw new Error(`socks5 node request: bad port ${r.port}`)
  const out = new Uint8Array(4 + name.length)
  out[0] = VERSION
  out[1] = r.port >> 8
  out[2] = r.port & 0xff
  out[3] = name.length
  out.set(name, 4)
  return out
}

/** The request at the start of `buf` and its length, 'short', or what is wrong with it. */
export function decodeNodeRequest (buf: Uint8Array): { value: NodeRequest, length: number } | 'short' | string {
  if (buf.length < 1) return 'short'
  if (buf[0] !== VERSION) return `unsupported version ${buf[0]}`
  if (buf.length < 4) return 'short'
  const port = (buf[1]! << 8) | buf[2]!
  if (port === 0) return 'port 0'
  const n = buf[3]!
  if (n === 0) return 'empty node name'
  if (buf.length < 4 + n) return 'short'
  return { value: { node: latin1(buf, 4, 4 + n), port }, length: 4 + n }
}
