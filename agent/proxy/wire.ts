// The proxy's tunnel protocol, free of I/O. A stream opened with PROXY_PROTOCOL starts with one
// request (which endpoint, TCP or UDP); the serving agent answers with one status byte and, on
// OK, the stream carries the connection: raw bytes for TCP, length-framed datagrams for UDP
// (a stream has no message boundaries, so every datagram is [u16 length][payload]).
import { isIPv4, isIPv6 } from 'node:net'
import { bytesToIpv6, ipv6ToBytes } from '../../shared/wire/addr.ts'

export const PROXY_PROTOCOL = '/edgemesh/proxy/1.0.0'
const VERSION = 1

export type L4Protocol = 'TCP' | 'UDP'
export interface ProxyRequest { protocol: L4Protocol, ip: string, port: number }

/** The serving agent's answer. */
export const ProxyStatus = { OK: 0, REFUSED: 1, DIAL_FAILED: 2, BAD_REQUEST: 3 } as const
export type ProxyStatus = typeof ProxyStatus[keyof typeof ProxyStatus]
export const statusName = (s: number): string => ['ok', 'refused', 'dial-failed', 'bad-request'][s] ?? `unknown(${s})`

/** Longest request on the wire (IPv6): version, protocol, family, 16 address bytes, port. */
export const MAX_REQUEST_BYTES = 21
export const MAX_DATAGRAM = 65_535
/**
 * Bytes of datagrams a flow may queue in its tunnel stream while the connection below is
 * momentarily full; past this a datagram is dropped (as a congested UDP path would), never
 * queued without bound.
 */
export const MAX_QUEUED_DATAGRAM_BYTES = 256 * 1024

export function encodeRequest (r: ProxyRequest): Uint8Array {
  const v4 = isIPv4(r.ip)
  if (!v4 && !isIPv6(r.ip)) throw new Error(`proxy request: bad address ${r.ip}`)
  if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535) throw new Error(`proxy request: bad port ${r.port}`)
  const out = new Uint8Array(v4 ? 9 : 21)
  out[0] = VERSION
  out[1] = r.protocol === 'TCP' ? 6 : 17
  out[2] = v4 ? 4 : 6
  if (v4) out.set(r.ip.split('.').map(Number), 3)
  else out.set(ipv6ToBytes(r.ip), 3)
  const p = out.length - 2
  out[p] = r.port >> 8
  out[p + 1] = r.port & 0xff
  return out
}

/**
 * Parses a request from the start of `buf`: the request and how many bytes it used, 'short'
 * when more bytes are needed, or an error message for a malformed one.
 */
export function decodeRequest (buf: Uint8Array): { request: ProxyRequest, length: number } | 'short' | string {
  if (buf.length < 3) return 'short'
  if (buf[0] !== VERSION) return `unsupported version ${buf[0]}`
  const protocol = buf[1] === 6 ? 'TCP' : buf[1] === 17 ? 'UDP' : undefined
  if (protocol == null) return `unknown protocol ${buf[1]}`
  const family = buf[2]
  if (family !== 4 && family !== 6) return `unknown address family ${family}`
  const length = family === 4 ? 9 : 21
  if (buf.length < length) return 'short'
  const ip = family === 4 ? `${buf[3]}.${buf[4]}.${buf[5]}.${buf[6]}` : bytesToIpv6(buf.subarray(3, 19))
  const port = (buf[length - 2]! << 8) | buf[length - 1]!
  if (port === 0) return 'port 0'
  return { request: { protocol, ip, port }, length }
}


/** One datagram as a frame: [u16 length][payload]. */
export function encodeDatagram (payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_DATAGRAM) throw new Error(`datagram of ${payload.length} bytes exceeds ${MAX_DATAGRAM}`)
  const out = new Uint8Array(payload.length + 2)
  out[0] = payload.length >> 8
  out[1] = payload.length & 0xff
  out.set(payload, 2)
  return out
}

/**
 * Reassembles frames from stream chunks, whatever their boundaries. Every length in
 * 0..65535 is valid, so a byte stream cannot be malformed, only cut short.
 */
export class DatagramDecoder {
  /** chunks of an incomplete frame, joined only once it is complete (tiny chunks stay linear) */
  private parts: Uint8Array[] = []
  private partsLen = 0

  /** The complete datagrams in `chunk` (plus what was carried over); the rest waits. */
  push (chunk: Uint8Array): Uint8Array[] {
    let buf = chunk
    if (this.partsLen > 0) {
      this.parts.push(chunk)
      this.partsLen += chunk.length
      if (this.partsLen < 2) return []
      const first = this.parts[0]!
      const hi = first[0]!
      const lo = first.length > 1 ? first[1]! : this.parts[1]![0]!
      if (this.partsLen < 2 + ((hi << 8) | lo)) return []
      buf = new Uint8Array(this.partsLen)
      let o = 0
      for (const p of this.parts) { buf.set(p, o); o += p.length }
      this.parts = []
      this.partsLen = 0
    }
    const out: Uint8Array[] = []
    let o = 0
    while (buf.length - o >= 2) {
      const n = (buf[o]! << 8) | buf[o + 1]!
      if (buf.length - o - 2 < n) break
      out.push(buf.subarray(o + 2, o + 2 + n))
      o += 2 + n
    }
    if (o < buf.length) { this.parts = [buf.slice(o)]; this.partsLen = buf.length - o }
    return out
  }

  /** bytes of an incomplete frame waiting for the rest */
  get buffered (): number { return this.partsLen }
}
