// The client's half of SOCKS5 (RFC 1928 CONNECT with a domain name, RFC 1929 username/password),
// as pure functions: the bytes `edgemesh nc` sends, and an incremental reader of what the proxy
// answers (a reply may arrive split at any byte). Malformed answers are errors, never throws
// from deep inside; what an operator reads for each reply code is here too.

export const SOCKS_VERSION = 0x05
export const METHOD_NONE = 0x00
export const METHOD_USERPASS = 0x02
export const METHOD_REFUSED = 0xff
const CMD_CONNECT = 0x01
const ATYP_IPV4 = 0x01
const ATYP_DOMAIN = 0x03
const ATYP_IPV6 = 0x04

/** What each RFC 1928 reply code means when an edgemesh agent sends it. */
export const REPLY_MEANING: Record<number, string> = {
  0x01: 'general failure (see the agent\'s log)',
  0x02: 'not allowed (the port is not in the node\'s allowedPorts, not a port of the Service, or the node does not serve SOCKS5)',
  0x03: 'network unreachable (the node is offline: the tunnel cannot reach it)',
  0x04: 'host unreachable (no such node or Service, or the Service has no ready endpoint)',
  0x05: 'connection refused (nothing listens on that port)',
  0x06: 'timed out',
  0x07: 'command not supported',
  0x08: 'address type not supported (give a node or Service name, not an IP address)'
}

export function replyText (code: number): string {
  return `${REPLY_MEANING[code] ?? 'unknown reply code'} (SOCKS5 reply ${code})`
}

export interface Credentials { user: string, password: string }

/** The method selection: no authentication, or username/password only when we have credentials. */
export function greeting (creds?: Credentials): Buffer {
  return creds == null ? Buffer.from([SOCKS_VERSION, 1, METHOD_NONE]) : Buffer.from([SOCKS_VERSION, 1, METHOD_USERPASS])
}

/** RFC 1929 sub-negotiation; user and password are 1..255 bytes each. */
export function userPassRequest (creds: Credentials): Buffer {
  const u = Buffer.from(creds.user, 'utf8')
  const p = Buffer.from(creds.password, 'utf8')
  if (u.length < 1 || u.length > 255) throw new RangeError('the SOCKS5 user name must be 1 to 255 bytes')
  if (p.length < 1 || p.length > 255) throw new RangeError('the SOCKS5 password must be 1 to 255 bytes')
  return Buffer.concat([Buffer.from([0x01, u.length]), u, Buffer.from([p.length]), p])
}

/** CONNECT to a host name (sent as ATYP DOMAIN: the agent resolves node and Service names). */
export function connectRequest (host: string, port: number): Buffer {
  const h = Buffer.from(host, 'ascii')
  if (h.length < 1 || h.length > 255) throw new RangeError('the target name must be 1 to 255 characters')
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError('the port must be 1 to 65535')
  const out = Buffer.alloc(7 + h.length)
  out[0] = SOCKS_VERSION; out[1] = CMD_CONNECT; out[2] = 0; out[3] = ATYP_DOMAIN; out[4] = h.length
  h.copy(out, 5)
  out.writeUInt16BE(port, 5 + h.length)
  return out
}

/** A parse step: not enough bytes yet, a value and how many bytes it took, or a protocol error. */
export type Parsed<T> = { need: true } | { value: T, used: number } | { error: string }

export function parseMethodChoice (buf: Uint8Array): Parsed<number> {
  if (buf.length < 2) return { need: true }
  if (buf[0] !== SOCKS_VERSION) return { error: `not a SOCKS5 proxy (its first byte is ${buf[0]})` }
  return { value: buf[1]!, used: 2 }
}

/** RFC 1929 answer: status 0 is success. */
export function parseAuthStatus (buf: Uint8Array): Parsed<number> {
  if (buf.length < 2) return { need: true }
  if (buf[0] !== 0x01) return { error: `bad username/password answer (version ${buf[0]})` }
  return { value: buf[1]!, used: 2 }
}

export interface Reply { code: number, bindAddress: string, bindPort: number }

/** The CONNECT reply, of length 6 + the address (4, 16, or 1 + the name's length). */
export function parseReply (buf: Uint8Array): Parsed<Reply> {
  if (buf.length < 5) return { need: true }
  if (buf[0] !== SOCKS_VERSION) return { error: `bad SOCKS5 reply (version ${buf[0]})` }
  if (buf[2] !== 0) return { error: `bad SOCKS5 reply (reserved byte ${buf[2]})` }
  const atyp = buf[3]
  let addrLen: number
  let start = 4
  if (atyp === ATYP_IPV4) addrLen = 4
  else if (atyp === ATYP_IPV6) addrLen = 16
  else if (atyp === ATYP_DOMAIN) { addrLen = buf[4]!; start = 5 }
  else return { error: `bad SOCKS5 reply (address type ${atyp})` }
  const total = start + addrLen + 2
  if (buf.length < total) return { need: true }
  const addr = buf.subarray(start, start + addrLen)
  const bindAddress = atyp === ATYP_IPV4
    ? [...addr].join('.')
    : atyp === ATYP_IPV6
      ? Array.from({ length: 8 }, (_, i) => ((addr[2 * i]! << 8) | addr[2 * i + 1]!).toString(16)).join(':')
      : Buffer.from(addr).toString('latin1')
  const bindPort = (buf[start + addrLen]! << 8) | buf[start + addrLen + 1]!
  return { value: { code: buf[1]!, bindAddress, bindPort }, used: total }
}
