// IP endpoint encoding for the control protocol: family byte (4 or 6), address bytes, port.
import { isIPv4, isIPv6 } from 'node:net'
import { ByteReader, ByteWriter, WireError } from './bytes.ts'

export interface Endpoint { host: string, port: number }

export function endpointKey (e: Endpoint): string {
  return e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`
}

function ipv6ToBytes (host: string): Uint8Array {
  const [head = '', tail] = host.split('::') as [string, string | undefined]
  const parse = (s: string): number[] => s === '' ? [] : s.split(':').map((h) => Number.parseInt(h, 16))
  const left = parse(head)
  const right = tail === undefined ? [] : parse(tail)
  const groups = tail === undefined ? left : [...left, ...new Array(8 - left.length - right.length).fill(0), ...right]
  const out = new Uint8Array(16)
  groups.forEach((g, i) => { out[i * 2] = g >> 8; out[i * 2 + 1] = g & 0xff })
  return out
}

function bytesToIpv6 (b: Uint8Array): string {
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16))
  // not compressed: still a valid IPv6 literal, and the codec does not need canonical form
  return groups.join(':')
}

export function writeEndpoint (w: ByteWriter, e: Endpoint): void {
  if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535) throw new WireError(`port out of range: ${e.port}`)
  if (isIPv4(e.host)) {
    w.u8(4)
    for (const part of e.host.split('.')) w.u8(Number(part))
  } else if (isIPv6(e.host) && !e.host.includes('.')) {
    w.u8(6).bytes(ipv6ToBytes(e.host))
  } else {
    throw new WireError(`not an IP address: ${e.host}`)
  }
  w.u16(e.port)
}

export function readEndpoint (r: ByteReader): Endpoint {
  const family = r.u8('address family')
  let host: string
  if (family === 4) host = Array.from(r.bytes(4, 'IPv4 address')).join('.')
  else if (family === 6) host = bytesToIpv6(r.bytes(16, 'IPv6 address'))
  else throw new WireError(`unknown address family ${family}`)
  const port = r.u16('port')
  if (port === 0) throw new WireError('port 0')
  return { host, port }
}
