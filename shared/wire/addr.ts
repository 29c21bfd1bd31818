// IP endpoint encoding for the control protocol: family byte (4 or 6), address bytes, port.
import { isIPv4, isIPv6 } from 'node:net'
import { ByteReader, ByteWriter, WireError } from './bytes.ts'

export interface Endpoint { host: string, port: number }

export function endpointKey (e: Endpoint): string {
  return e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`
}

/**
 * IPv6 text to its 16 bytes. Takes any literal node:net isIPv6 accepts: '::' compression, a
 * dotted IPv4 tail (::ffff:1.2.3.4) and a zone (%eth0, dropped: it is not on the wire).
 */
export function ipv6ToBytes (ip: string): Uint8Array {
  const bare = ip.replace(/%.*$/, '')
  const [head, tail] = bare.includes('::') ? bare.split('::') as [string, string] : [bare, undefined]
  const groups = (s: string): number[] => s === '' ? [] : s.split(':').flatMap((g) => {
    if (!g.includes('.')) return [Number.parseInt(g, 16)]
    const b = g.split('.').map(Number)
    return [(b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!]
  })
  const h = groups(head)
  const t = tail != null ? groups(tail) : []
  const all = [...h, ...new Array<number>(Math.max(0, 8 - h.length - t.length)).fill(0), ...t]
  const out = new Uint8Array(16)
  all.slice(0, 8).forEach((g, i) => { out[2 * i] = g >> 8; out[2 * i + 1] = g & 0xff })
  return out
}

/** 16 bytes as IPv6 text: eight hex groups, not compressed (still a valid literal; the codecs need no canonical form). */
export function bytesToIpv6 (b: Uint8Array): string {
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((b[i]! << 8) | b[i + 1]!).toString(16))
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
