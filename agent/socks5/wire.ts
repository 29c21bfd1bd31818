// The SOCKS5 wire format (RFC 1928, RFC 1929 username/password), free of I/O, both sides: the
// agent's server parses greetings, credentials and requests and encodes replies; `edgemesh nc`
// and the tests encode the client's messages and parse the server's. Parsers take the bytes
// received so far and answer the message and its length, 'short' when more bytes are needed,
// or an error message for malformed input. Replies are always full RFC 1928 §6 replies (with
// an address), never the 2-byte shortcut some servers send on errors.
import { isIPv4, isIPv6 } from 'node:net'
import { bytesToIpv6, ipv6ToBytes } from '../../shared/wire/addr.ts'

export const SOCKS_VERSION = 5
/** RFC 1929 sub-negotiation version */
export const USERPASS_VERSION = 1

export const AuthMethod = { NONE: 0x00, USERPASS: 0x02, NO_ACCEPTABLE: 0xff } as const
export const Command = { CONNECT: 0x01, BIND: 0x02, UDP_ASSOCIATE: 0x03 } as const
export const AddressType = { IPV4: 0x01, DOMAIN: 0x03, IPV6: 0x04 } as const
export const Reply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08
} as const
export type ReplyCode = typeof Reply[keyof typeof Reply]

const REPLY_TEXT = ['succeeded', 'general SOCKS server failure', 'connection not allowed by ruleset', 'network unreachable', 'host unreachable', 'connection refused', 'TTL expired', 'command not supported', 'address type not supported']
/** RFC 1928's name for a reply code. */
export const replyText = (code: number): string => REPLY_TEXT[code] ?? `unassigned reply 0x${code.toString(16).padStart(2, '0')}`

export type Parsed<T> = { value: T, length: number } | 'short' | string

export interface Greeting { methods: number[] }
export interface UserPass { username: Uint8Array, password: Uint8Array }
export interface Request { command: number, addressType: number, host: string, port: number }
export interface ReplyMessage { reply: number, addressType: number, host: string, port: number }

// ---------------------------------------------------------------- server side: parse

/** VER NMETHODS METHODS... */
export function parseGreeting (buf: Uint8Array): Parsed<Greeting> {
  if (buf.length < 1) return 'short'
  if (buf[0] !== SOCKS_VERSION) return `not SOCKS5 (version byte ${buf[0]})`
  if (buf.length < 2) return 'short'
  const n = buf[1]!
  if (n === 0) return 'greeting offers no authentication method'
  if (buf.length < 2 + n) return 'short'
  const methods: number[] = []
  for (let i = 2; i < 2 + n; i++) methods.push(buf[i]!)
  return { value: { methods }, length: 2 + n }
}

/** RFC 1929: VER ULEN UNAME PLEN PASSWD */
export function parseUserPass (buf: Uint8Array): Parsed<UserPass> {
  if (buf.length < 1) return 'short'
  if (buf[0] !== USERPASS_VERSION) return `unknown username/password version ${buf[0]}`
  if (buf.length < 2) return 'short'
  const ulen = buf[1]!
  if (ulen === 0) return 'empty username'
  if (buf.length < 3 + ulen) return 'short'
  const plen = buf[2 + ulen]!
  if (plen === 0) return 'empty password'
  const length = 3 + ulen + plen
  if (buf.length < length) return 'short'
  return { value: { username: buf.slice(2, 2 + ulen), password: buf.slice(3 + ulen, length) }, length }
}

/** VER CMD RSV ATYP DST.ADDR DST.PORT (the command is returned whatever it is; the server refuses the ones it does not support) */
export function parseRequest (buf: Uint8Array): Parsed<Request> {
  if (buf.length < 1) return 'short'
  if (buf[0] !== SOCKS_VERSION) return `not SOCKS5 (request version byte ${buf[0]})`
  if (buf.length < 4) return 'short'
  if (buf[2] !== 0) return `reserved byte is ${buf[2]}, not 0`
  const address = parseAddress(buf, 3)
  if (typeof address === 'string') return address
  return { value: { command: buf[1]!, addressType: buf[3]!, host: address.host, port: address.port }, length: address.end }
}

// ---------------------------------------------------------------- client side: parse

/** VER METHOD */
export function parseMethodSelection (buf: Uint8Array): Parsed<{ method: number }> {
  if (buf.length < 1) return 'short'
  if (buf[0] !== SOCKS_VERSION) return `not SOCKS5 (version byte ${buf[0]})`
  if (buf.length < 2) return 'short'
  return { value: { method: buf[1]! }, length: 2 }
}

/** RFC 1929: VER STATUS (0 = success) */
export function parseAuthStatus (buf: Uint8Array): Parsed<{ ok: boolean, status: number }> {
  if (buf.length < 1) return 'short'
  if (buf[0] !== USERPASS_VERSION) return `unknown username/password version ${buf[0]}`
  if (buf.length < 2) return 'short'
  return { value: { ok: buf[1] === 0, status: buf[1]! }, length: 2 }
}

/** VER REP RSV ATYP BND.ADDR BND.PORT */
export function parseReply (buf: Uint8Array): Parsed<ReplyMessage> {
  if (buf.length < 1) return 'short'
  if (buf[0] !== SOCKS_VERSION) return `not SOCKS5 (reply version byte ${buf[0]})`
  if (buf.length < 4) return 'short'
  const address = parseAddress(buf, 3)
  if (typeof address === 'string') return address
  return { value: { reply: buf[1]!, addressType: buf[3]!, host: address.host, port: address.port }, length: address.end }
}

/** ATYP ADDR PORT starting at `at` (the ATYP byte). */
function parseAddress (buf: Uint8Array, at: number): { host: string, port: number, end: number } | 'short' | string {
  const atyp = buf[at]!
  let host: string
  let end: number
  if (atyp === AddressType.IPV4) {
    end = at + 1 + 4 + 2
    if (buf.length < end) return 'short'
    host = `${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}.${buf[at + 4]}`
  } else if (atyp === AddressType.IPV6) {
    end = at + 1 + 16 + 2
    if (buf.length < end) return 'short'
    host = bytesToIpv6(buf.subarray(at + 1, at + 17))
  } else if (atyp === AddressType.DOMAIN) {
    if (buf.length < at + 2) return 'short'
    const n = buf[at + 1]!
    if (n === 0) return 'empty domain name'
    end = at + 2 + n + 2
    if (buf.length < end) return 'short'
    host = latin1(buf, at + 2, at + 2 + n)
  } else {
    return `unknown address type ${atyp}`
  }
  return { host, port: (buf[end - 2]! << 8) | buf[end - 1]!, end }
}

/** Bytes as latin1 text (one char per byte: a name is shown and matched as sent, never mis-decoded). */
export function latin1 (buf: Uint8Array, start: number, end: number): string {
  let s = ''
  for (let i = start; i < end; i++) s += String.fromCharCode(buf[i]!)
  return s
}

// ---------------------------------------------------------------- server side: encode

export const encodeMethodSelection = (method: number): Uint8Array => Uint8Array.of(SOCKS_VERSION, method)
export const encodeAuthStatus = (ok: boolean): Uint8Array => Uint8Array.of(USERPASS_VERSION, ok ? 0 : 1)

/** A full reply: 10 bytes with an IPv4 bound address (0.0.0.0:0 unless given), 22 with IPv6. */
export function encodeReply (reply: number, bound: { host: string, port: number } = { host: '0.0.0.0', port: 0 }): Uint8Array {
  if (isIPv6(bound.host)) {
    const out = new Uint8Array(22)
    out.set([SOCKS_VERSION, reply, 0, AddressType.IPV6])
    out.set(ipv6ToBytes(bound.host), 4)
    out[20] = bound.port >> 8; out[21] = bound.port & 0xff
    return out
  }
  const host = isIPv4(bound.host) ? bound.host : '0.0.0.0'
  return Uint8Array.of(SOCKS_VERSION, reply, 0, AddressType.IPV4, ...host.split('.').map(Number), bound.port >> 8, bound.port & 0xff)
}

// ---------------------------------------------------------------- client side: encode

export function encodeGreeting (methods: number[]): Uint8Array {
  if (methods.length < 1 || methods.length > 255) throw new Error(`SOCKS5 greeting: 1-255 methods, not ${methods.length}`)
  return Uint8Array.of(SOCKS_VERSION, methods.length, ...methods)
}

const bytesOf = (s: string | Uint8Array): Uint8Array => typeof s === 'string' ? new TextEncoder().encode(s) : s

export function encodeUserPass (username: string | Uint8Array, password: string | Uint8Array): Uint8Array {
  const u = bytesOf(username)
  const p = bytesOf(password)
  if (u.length < 1 || u.length > 255) throw new Error(`SOCKS5 username: 1-255 bytes, not ${u.length}`)
  if (p.length < 1 || p.length > 255) throw new Error(`SOCKS5 password: 1-255 bytes, not ${p.length}`)
  const out = new Uint8Array(3 + u.length + p.length)
  out[0] = USERPASS_VERSION
  out[1] = u.length
  out.set(u, 2)
  out[2 + u.length] = p.length
  out.set(p, 3 + u.length)
  return out
}

/** A request; an IP literal goes as IPv4/IPv6 unless `addressType` says otherwise, anything else as a domain name. */
export function encodeRequest (r: { command?: number, host: string, port: number, addressType?: number }): Uint8Array {
  if (!Number.isInteger(r.port) || r.port < 0 || r.port > 65535) throw new Error(`SOCKS5 request: bad port ${r.port}`)
  const atyp = r.addressType ?? (isIPv4(r.host) ? AddressType.IPV4 : isIPv6(r.host) ? AddressType.IPV6 : AddressType.DOMAIN)
  let addr: Uint8Array
  if (atyp === AddressType.IPV4) {
    if (!isIPv4(r.host)) throw new Error(`SOCKS5 request: ${r.host} is not an IPv4 address`)
    addr = Uint8Array.from(r.host.split('.').map(Number))
  } else if (atyp === AddressType.IPV6) {
    if (!isIPv6(r.host)) throw new Error(`SOCKS5 request: ${r.host} is not an IPv6 address`)
    addr = ipv6ToBytes(r.host)
  } else {
    const name = Buffer.from(r.host, 'latin1')
    if (name.length < 1 || name.length > 255) throw new Error(`SOCKS5 request: a domain name has 1-255 bytes, not ${name.length}`)
    addr = new Uint8Array(1 + name.length)
    addr[0] = name.length
    addr.set(name, 1)
  }
  const out = new Uint8Array(4 + addr.length + 2)
  out.set([SOCKS_VERSION, r.command ?? Command.CONNECT, 0, atyp])
  out.set(addr, 4)
  out[out.length - 2] = r.port >> 8
  out[out.length - 1] = r.port & 0xff
  return out
}
