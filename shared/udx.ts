// Typed facade over udx-native (CommonJS, ships no types). Only what edgemesh uses is typed.
import { createRequire } from 'node:module'
import type { EventEmitter } from 'node:events'
import type { Endpoint } from './wire/addr.ts'

export interface UdxSocket extends EventEmitter {
  bind (port?: number, host?: string): void
  address (): { host: string, family: number, port: number }
  trySend (buf: Uint8Array, port: number, host: string, ttl?: number): void
  send (buf: Uint8Array, port: number, host: string, ttl?: number): Promise<boolean>
  close (): Promise<void>
  readonly bound: boolean
  readonly closing: boolean
  on (event: 'message', fn: (buf: Buffer, from: Endpoint & { family: number }) => void): this
  on (event: 'close' | 'listening' | 'idle', fn: () => void): this
  on (event: string, fn: (...args: any[]) => void): this
}

export interface UdxStream extends EventEmitter {
  readonly id: number
  readonly remoteId: number
  readonly remoteHost: string | null
  readonly remotePort: number
  readonly rtt: number
  /** every packet received on this stream, acks and keepalives included */
  readonly packetsReceived: number
  readonly mtu: number
  readonly destroyed: boolean
  readonly connected: boolean
  connect (socket: UdxSocket, remoteId: number, port: number, host: string): void
  changeRemote (socket: UdxSocket, remoteId: number, port: number, host: string): Promise<void>
  relayTo (other: UdxStream): void
  setKeepalive (ms: number): void
  write (buf: Uint8Array): boolean
  end (buf?: Uint8Array): void
  destroy (err?: Error): void
  pause (): void
  resume (): void
}

export interface Udx {
  createSocket (opts?: { ipv6Only?: boolean }): UdxSocket
  createStream (id: number, opts?: { firewall?: (socket: UdxSocket, port: number, host: string) => boolean }): UdxStream
}

const require = createRequire(import.meta.url)
const UDXClass = require('udx-native') as new () => Udx
const UDXStreamClass = require('udx-native/lib/stream.js') as new (udx: Udx, id: number, opts?: object) => UdxStream

export function createUdx (): Udx {
  return new UDXClass()
}

/**
 * A UDX stream whose received packets go straight to `sink` instead of through streamx's
 * readable machinery: udx-native calls JavaScript once per UDP packet (~1.4 KB), and the
 * per-packet streamx push/emit was a measurable share of the receive path's CPU.
 * `_ondata`/`_consumeData` are udx-native internals; the dependency is pinned exactly.
 */
export interface SinkUdxStream extends UdxStream {
  sink: ((packet: Buffer) => void) | null
}

class SinkStream extends (UDXStreamClass as any) {
  sink: ((packet: Buffer) => void) | null = null
  _ondata (read: number): Buffer {
    const self = this as any
    if (this.sink === null) return super._ondata(read)
    this.sink(self._consumeData(read))
    return self._buffer
  }
}

export function createSinkStream (udx: Udx, id: number): SinkUdxStream {
  return new (SinkStream as any)(udx, id) as SinkUdxStream
}

