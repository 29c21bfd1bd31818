// The rendezvous protocol: small binary datagrams between an agent's UDP socket and a relay
// (register, connect, peer-info) and between two agents (punch). They share the socket with
// UDX streams; UDX packets start with 0xff, ours with the magic "EM", so they never collide.
//
// Layout: 'E' 'M' version type | fields (big endian). Decoding never trusts a length: any
// malformed input throws WireError, and callers drop and count it.
import { ByteReader, ByteWriter, WireError } from './bytes.ts'
import { readEndpoint, writeEndpoint, type Endpoint } from './addr.ts'

export const MAGIC0 = 0x45 // 'E'
export const MAGIC1 = 0x4d // 'M'
export const VERSION = 1
export const MAX_CANDIDATES = 16

export interface Candidate extends Endpoint { proto: 'udp' | 'tcp' }


export const MessageType = {
  register: 1,
  registered: 2,
  connect: 3,
  peerInfo: 4,
  connectError: 5,
  punch: 6
} as const

export const ConnectErrorCode = {
  unknownPeer: 1,
  peerNotOnUdp: 2,
  notRegistered: 3,
  overloaded: 4
} as const
export type ConnectErrorCode = typeof ConnectErrorCode[keyof typeof ConnectErrorCode]

export interface RegisterMessage {
  type: 'register'
  timestampMs: number
  peerId: Uint8Array
  nodeName: string
  candidates: Candidate[]
  signature: Uint8Array
  /** HMAC over the signed bytes with the cluster PSK; empty when no PSK is configured */
  mac: Uint8Array
}

export interface RegisteredMessage {
  type: 'registered'
  observed: Endpoint
  /** random per relay process: a change tells agents the relay restarted and lost state */
  bootId: number
  keepaliveMs: number
}

export interface ConnectMessage {
  type: 'connect'
  requestId: number
  target: Uint8Array
  /** also allocate a blind relay session, so the caller can race relay against the punch */
  wantRelay: boolean
}

export interface PeerInfoMessage {
  type: 'peer-info'
  /** the connect request this answers; 0 on the responder side */
  requestId: number
  session: bigint
  initiator: boolean
  peer: Uint8Array
  peerName: string
  candidates: Candidate[]
  /** UDX stream ids for the punched path: ours and the peer's */
  directLocalId: number
  directRemoteId: number
  /** UDX stream ids for the blind relay path (0 when none was allocated) */
  relayLocalId: number
  relayRemoteId: number
}

export interface ConnectErrorMessage {
  type: 'connect-error'
  requestId: number
  code: ConnectErrorCode
  reason: string
}

export interface PunchMessage {
  type: 'punch'
  session: bigint
  ack: boolean
}

export type RendezvousMessage = RegisterMessage | RegisteredMessage | ConnectMessage | PeerInfoMessage | ConnectErrorMessage | PunchMessage

/** UTF-8 bytes of s, cut to at most max bytes on a character boundary. */
function truncateUtf8 (s: string, max: number): Uint8Array {
  const b = new TextEncoder().encode(s)
  if (b.byteLength <= max) return b
  let end = max
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--
  return b.subarray(0, end)
}

/** Cheap test used on the hot receive path before a full decode. */
export function looksLikeRendezvous (buf: Uint8Array): boolean {
  return buf.byteLength >= 4 && buf[0] === MAGIC0 && buf[1] === MAGIC1
}

function header (type: number): ByteWriter {
  return new ByteWriter(128).u8(MAGIC0).u8(MAGIC1).u8(VERSION).u8(type)
}

function writeCandidates (w: ByteWriter, cs: Candidate[]): void {
  if (cs.length > MAX_CANDIDATES) throw new WireError('too many candidates')
  w.u8(cs.length)
  for (const c of cs) { w.u8(c.proto === 'udp' ? 1 : 2); writeEndpoint(w, c) }
}

function readCandidates (r: ByteReader): Candidate[] {
  const n = r.u8('candidate count')
  if (n > MAX_CANDIDATES) throw new WireError(`too many candidates (${n})`)
  const out: Candidate[] = []
  for (let i = 0; i < n; i++) {
    const p = r.u8('candidate proto')
    if (p !== 1 && p !== 2) throw new WireError(`unknown candidate proto ${p}`)
    out.push({ proto: p === 1 ? 'udp' : 'tcp', ...readEndpoint(r) })
  }
  return out
}

/** The part of a register message covered by its signature (everything before it). */
export function encodeRegisterBody (m: Omit<RegisterMessage, 'type' | 'signature' | 'mac'>): Uint8Array {
  const w = header(MessageType.register)
  if (m.peerId.byteLength === 0 || m.peerId.byteLength > 64) throw new WireError('peer id must be 1-64 bytes')
  w.u64(BigInt(m.timestampMs)).shortBytes(m.peerId, 'peer id').utf8(m.nodeName, 'node name')
  writeCandidates(w, m.candidates)
  return w.finish()
}

export function encodeRegister (body: Uint8Array, signature: Uint8Array, mac: Uint8Array): Uint8Array {
  return new ByteWriter(body.byteLength + 100).bytes(body).shortBytes(signature, 'signature').shortBytes(mac, 'mac').finish()
}

export function encodeMessage (m: Exclude<RendezvousMessage, RegisterMessage>): Uint8Array {
  switch (m.type) {
    case 'registered': {
      const w = header(MessageType.registered)
      writeEndpoint(w, m.observed)
      return w.u32(m.bootId).u32(m.keepaliveMs).finish()
    }
    case 'connect':
      return header(MessageType.connect).u32(m.requestId).shortBytes(m.target, 'target').u8(m.wantRelay ? 1 : 0).finish()
    case 'peer-info': {
      const w = header(MessageType.peerInfo).u32(m.requestId).u64(m.session).u8(m.initiator ? 1 : 0)
        .shortBytes(m.peer, 'peer id').utf8(m.peerName, 'peer name')
      writeCandidates(w, m.candidates)
      return w.u32(m.directLocalId).u32(m.directRemoteId).u32(m.relayLocalId).u32(m.relayRemoteId).finish()
    }
    case 'connect-error':
      return header(MessageType.connectError).u32(m.requestId).u8(m.code).shortBytes(truncateUtf8(m.reason, 200), 'reason').finish()
    case 'punch':
      return header(MessageType.punch).u64(m.session).u8(m.ack ? 1 : 0).finish()
  }
}

export interface Decoded<M extends RendezvousMessage = RendezvousMessage> {
  message: M
  /** for register: the bytes the signature covers */
  signed?: Uint8Array
}

export function decodeMessage (buf: Uint8Array): Decoded {
  const r = new ByteReader(buf)
  if (r.u8('magic') !== MAGIC0 || r.u8('magic') !== MAGIC1) throw new WireError('bad magic')
  const version = r.u8('version')
  if (version !== VERSION) throw new WireError(`unsupported version ${version}`)
  const type = r.u8('type')
  switch (type) {
    case MessageType.register: {
      const timestampMs = Number(r.u64('timestamp'))
      const peerId = r.shortBytes('peer id', 64)
      if (peerId.byteLength === 0) throw new WireError('empty peer id')
      const nodeName = r.utf8('node name', 253)
      const candidates = readCandidates(r)
      const signed = buf.subarray(0, r.position)
      const signature = r.shortBytes('signature', 128)
      const mac = r.shortBytes('mac', 64)
      r.end()
      return { message: { type: 'register', timestampMs, peerId, nodeName, candidates, signature, mac }, signed }
    }
    case MessageType.registered: {
      const observed = readEndpoint(r)
      const bootId = r.u32('boot id')
      const keepaliveMs = r.u32('keepalive')
      r.end()
      return { message: { type: 'registered', observed, bootId, keepaliveMs } }
    }
    case MessageType.connect: {
      const requestId = r.u32('request id')
      const target = r.shortBytes('target', 64)
      if (target.byteLength === 0) throw new WireError('empty target')
      const flags = r.u8('flags')
      r.end()
      return { message: { type: 'connect', requestId, target, wantRelay: (flags & 1) === 1 } }
    }
    case MessageType.peerInfo: {
      const requestId = r.u32('request id')
      const session = r.u64('session')
      const initiator = r.u8('role') === 1
      const peer = r.shortBytes('peer id', 64)
      if (peer.byteLength === 0) throw new WireError('empty peer id')
      const peerName = r.utf8('peer name', 253)
      const candidates = readCandidates(r)
      const directLocalId = r.u32('direct id')
      const directRemoteId = r.u32('direct id')
      const relayLocalId = r.u32('relay id')
      const relayRemoteId = r.u32('relay id')
      r.end()
      return { message: { type: 'peer-info', requestId, session, initiator, peer, peerName, candidates, directLocalId, directRemoteId, relayLocalId, relayRemoteId } }
    }
    case MessageType.connectError: {
      const requestId = r.u32('request id')
      const code = r.u8('code')
      if (code < 1 || code > 4) throw new WireError(`unknown error code ${code}`)
      const reason = r.utf8('reason')
      r.end()
      return { message: { type: 'connect-error', requestId, code: code as ConnectErrorCode, reason } }
    }
    case MessageType.punch: {
      const session = r.u64('session')
      const ack = r.u8('ack') === 1
      r.end()
      return { message: { type: 'punch', session, ack } }
    }
    default:
      throw new WireError(`unknown message type ${type}`)
  }
}
