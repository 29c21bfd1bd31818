// The rendezvous protocol: small binary datagrams between an agent's UDP socket and a relay
// (register, connect, peer-info) and between two agents (punch). They share the socket with
// UDX streams; UDX packets start with 0xff, ours with the magic "EM", so they never collide.
//
// Layout: 'E' 'M' version type | fields (big endian). Decoding never trusts a length and bounds
// every number: any malformed or out-of-range input throws WireError, and callers drop and count it.
//
// What the relay tells an agent (registered, peer-info, connect-error, register-refused) ends with `echo` (the
// timestamp of the agent's latest register the relay accepted, on the agent's own clock) and a
// 64-byte Ed25519 signature by the relay's identity key over the message bytes before the
// signature followed by the recipient agent's peer id (relaySignedBytes). The agent knows the
// relay's peer id from its config, so a spoofed relay address gets it nothing (agent/tunnel/relay-auth.ts).
//
// `registered` also carries a random cookie the relay draws for each registration; every
// `connect` must carry it back. Only a host on the agent's path sees it, so a host that merely
// spoofs an agent's public ip:port cannot spend that agent's connect budget or relay pairs.
import { ByteReader, ByteWriter, WireError } from './bytes.ts'
import { readEndpoint, writeEndpoint, type Endpoint } from './addr.ts'

export const MAGIC0 = 0x45 // 'E'
export const MAGIC1 = 0x4d // 'M'
/** 2: relay-to-agent messages carry echo + signature; registered carries a cookie that connect returns */
export const VERSION = 2
/** The byte that holds the version (after the magic). */
export const VERSION_OFFSET = 2
/** Length of the per-registration connect cookie. */
export const COOKIE_BYTES = 8
export const MAX_CANDIDATES = 16
/** Ed25519 signature length */
export const SIGNATURE_BYTES = 64
/** The keepalive interval a relay may ask for (the range ServerConfig.keepaliveMs allows). */
export const MIN_KEEPALIVE_MS = 200
export const MAX_KEEPALIVE_MS = 25_000
/** timestamps and echoes are JavaScript numbers on both ends: integers up to 2^53 - 1 */
export const MAX_TIMESTAMP_MS = Number.MAX_SAFE_INTEGER

export interface Candidate extends Endpoint { proto: 'udp' | 'tcp' }


export const MessageType = {
  register: 1,
  registered: 2,
  connect: 3,
  peerInfo: 4,
  connectError: 5,
  punch: 6,
  registerRefused: 7
} as const

/** Why a relay refused a registration (the limits, server/limits.ts). */
export const RegisterRefusal = {
  /** limits.maxAgentsPerIp agents already registered from the agent's public IP */
  perIp: 1,
  /** maxAgents agents already registered */
  total: 2
} as const
export type RegisterRefusal = typeof RegisterRefusal[keyof typeof RegisterRefusal]

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
  /** MIN_KEEPALIVE_MS..MAX_KEEPALIVE_MS */
  keepaliveMs: number
  /** COOKIE_BYTES random bytes per registration: every connect must carry them */
  cookie: Uint8Array
  /** the timestampMs of the register this answers */
  echo: number
  signature: Uint8Array
}

export interface ConnectMessage {
  type: 'connect'
  /** random, nonzero: binds the answer to this request */
  requestId: number
  target: Uint8Array
  /** also allocate a blind relay session, so the caller can race relay against the punch */
  wantRelay: boolean
  /** the asking agent's peer id: the relay signs even its "register first" answer for it */
  requester: Uint8Array
  /** the cookie of the requester's registration (from its latest `registered`); zeros before it has one */
  cookie: Uint8Array
}

export interface PeerInfoMessage {
  type: 'peer-info'
  /** the connect request this answers; 0 on the responder side (and only there: initiator === requestId !== 0) */
  requestId: number
  session: bigint
  initiator: boolean
  peer: Uint8Array
  peerName: string
  candidates: Candidate[]
  /** UDX stream ids for the punched path: ours and the peer's (nonzero) */
  directLocalId: number
  directRemoteId: number
  /** UDX stream ids for the blind relay path (both 0 when none was allocated) */
  relayLocalId: number
  relayRemoteId: number
  /** the recipient's latest register timestamp the relay accepted */
  echo: number
  signature: Uint8Array
}

export interface ConnectErrorMessage {
  type: 'connect-error'
  /** the connect this answers (nonzero) */
  requestId: number
  code: ConnectErrorCode
  reason: string
  /** the recipient's latest register timestamp the relay accepted; 0 when it has none (notRegistered) */
  echo: number
  signature: Uint8Array
}

export interface PunchMessage {
  type: 'punch'
  session: bigint
  ack: boolean
}

/** The relay's answer to a register it refused by a limit, so the agent can say why it is not registered. */
export interface RegisterRefusedMessage {
  type: 'register-refused'
  reason: RegisterRefusal
  /** the timestamp of the refused register (nonzero) */
  echo: number
  signature: Uint8Array
}

export type RendezvousMessage = RegisterMessage | RegisteredMessage | ConnectMessage | PeerInfoMessage | ConnectErrorMessage | PunchMessage | RegisterRefusedMessage
/** What a relay sends an agent: signed by the relay. */
export type RelayMessage = RegisteredMessage | PeerInfoMessage | ConnectErrorMessage | RegisterRefusedMessage
/** A relay message before signing. */
export type UnsignedRelayMessage = Omit<RegisteredMessage, 'signature'> | Omit<PeerInfoMessage, 'signature'> | Omit<ConnectErrorMessage, 'signature'> | Omit<RegisterRefusedMessage, 'signature'>

export function isRelayMessage (m: RendezvousMessage): m is RelayMessage {
  return m.type === 'registered' || m.type === 'peer-info' || m.type === 'connect-error' || m.type === 'register-refused'
}

/** UTF-8 bytes of s, cut to at most max bytes on a character boundary. */
function truncateUtf8 (s: string, max: number): Uint8Array {
  const b = new TextEncoder().encode(s)
  if (b.byteLength <= max) return b
  let end = max
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--
  return b.subarray(0, end)
}

/** The protocol version a rendezvous datagram claims (looksLikeRendezvous must hold). */
export function versionOf (buf: Uint8Array): number {
  return buf[VERSION_OFFSET]!
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
  checkRange(m.timestampMs, 0, MAX_TIMESTAMP_MS, 'timestamp')
  w.u64(BigInt(m.timestampMs)).shortBytes(m.peerId, 'peer id').utf8(m.nodeName, 'node name')
  writeCandidates(w, m.candidates)
  return w.finish()
}

export function encodeRegister (body: Uint8Array, signature: Uint8Array, mac: Uint8Array): Uint8Array {
  return new ByteWriter(body.byteLength + 100).bytes(body).shortBytes(signature, 'signature').shortBytes(mac, 'mac').finish()
}

/** Throws WireError unless v is an integer in min..max (named after the field). */
function checkRange (v: number, min: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < min || v > max) throw new WireError(`${what} out of range: ${v}`)
}

function checkCookie (b: Uint8Array): void {
  if (b.byteLength !== COOKIE_BYTES) throw new WireError(`cookie must be ${COOKIE_BYTES} bytes`)
}

function checkPeerId (b: Uint8Array, what: string): void {
  if (b.byteLength === 0 || b.byteLength > 64) throw new WireError(`${what} must be 1-64 bytes`)
}

/**
 * The bounds every message must meet beyond its layout. Encoders and the decoder both apply it,
 * so whatever decodes is something an honest peer could have sent.
 */
function checkBounds (m: RendezvousMessage): void {
  switch (m.type) {
    case 'register':
      checkRange(m.timestampMs, 0, MAX_TIMESTAMP_MS, 'timestamp')
      return
    case 'registered':
      checkRange(m.bootId, 0, 0xffffffff, 'boot id')
      checkRange(m.keepaliveMs, MIN_KEEPALIVE_MS, MAX_KEEPALIVE_MS, 'keepalive')
      checkCookie(m.cookie)
      checkRange(m.echo, 1, MAX_TIMESTAMP_MS, 'echo')
      return
    case 'connect':
      checkRange(m.requestId, 1, 0xffffffff, 'request id')
      checkPeerId(m.target, 'target')
      checkPeerId(m.requester, 'requester')
      checkCookie(m.cookie)
      return
    case 'peer-info':
      checkRange(m.requestId, 0, 0xffffffff, 'request id')
      if (m.initiator !== (m.requestId !== 0)) throw new WireError('peer-info role does not match its request id')
      if (m.session < 0n || m.session > 0xffffffffffffffffn) throw new WireError('session out of range')
      checkPeerId(m.peer, 'peer id')
      checkRange(m.directLocalId, 1, 0xffffffff, 'direct id')
      checkRange(m.directRemoteId, 1, 0xffffffff, 'direct id')
      checkRange(m.relayLocalId, 0, 0xffffffff, 'relay id')
      checkRange(m.relayRemoteId, 0, 0xffffffff, 'relay id')
      if ((m.relayLocalId === 0) !== (m.relayRemoteId === 0)) throw new WireError('relay ids must be both zero or both nonzero')
      checkRange(m.echo, 1, MAX_TIMESTAMP_MS, 'echo')
      return
    case 'connect-error':
      checkRange(m.requestId, 1, 0xffffffff, 'request id')
      checkRange(m.code, 1, 4, 'error code')
      checkRange(m.echo, 0, MAX_TIMESTAMP_MS, 'echo')
      return
    case 'punch':
      if (m.session < 0n || m.session > 0xffffffffffffffffn) throw new WireError('session out of range')
      return
    case 'register-refused':
      checkRange(m.reason, 1, 2, 'refusal reason')
      checkRange(m.echo, 1, MAX_TIMESTAMP_MS, 'echo')
  }
}

/** The bytes of a relay message its signature covers (everything before the signature). */
function encodeRelayBody (m: UnsignedRelayMessage): Uint8Array {
  const types = { registered: MessageType.registered, 'peer-info': MessageType.peerInfo, 'connect-error': MessageType.connectError, 'register-refused': MessageType.registerRefused }
  const w = header(types[m.type])
  switch (m.type) {
    case 'registered':
      writeEndpoint(w, m.observed)
      w.u32(m.bootId).u32(m.keepaliveMs)
      if (m.cookie.byteLength !== COOKIE_BYTES) throw new WireError(`cookie must be ${COOKIE_BYTES} bytes`)
      w.bytes(m.cookie)
      break
    case 'peer-info':
      w.u32(m.requestId).u64(m.session).u8(m.initiator ? 1 : 0).shortBytes(m.peer, 'peer id').utf8(m.peerName, 'peer name')
      writeCandidates(w, m.candidates)
      w.u32(m.directLocalId).u32(m.directRemoteId).u32(m.relayLocalId).u32(m.relayRemoteId)
      break
    case 'connect-error':
      w.u32(m.requestId).u8(m.code).shortBytes(truncateUtf8(m.reason, 200), 'reason')
      break
    case 'register-refused':
      w.u8(m.reason)
      break
  }
  // bounds last, so layout errors (a hostname, an oversized field) keep their precise message
  checkBounds({ ...m, signature: new Uint8Array(SIGNATURE_BYTES) } as RelayMessage)
  return w.u64(BigInt(m.echo)).finish()
}

/** What a relay signs and an agent verifies: the message bytes before the signature, then the recipient's peer id. */
export function relaySignedBytes (signed: Uint8Array, recipient: Uint8Array): Uint8Array {
  const out = new Uint8Array(signed.byteLength + recipient.byteLength)
  out.set(signed, 0)
  out.set(recipient, signed.byteLength)
  return out
}

/** Encodes a relay message for one agent, signed with `sign` (the relay's identity key). */
export function encodeRelayMessage (m: UnsignedRelayMessage, recipient: Uint8Array, sign: (data: Uint8Array) => Uint8Array): Uint8Array {
  const body = encodeRelayBody(m)
  return appendSignature(body, sign(relaySignedBytes(body, recipient)))
}

function appendSignature (body: Uint8Array, signature: Uint8Array): Uint8Array {
  if (signature.byteLength !== SIGNATURE_BYTES) throw new WireError(`signature must be ${SIGNATURE_BYTES} bytes`)
  return new ByteWriter(body.byteLength + SIGNATURE_BYTES).bytes(body).bytes(signature).finish()
}

export function encodeMessage (m: Exclude<RendezvousMessage, RegisterMessage>): Uint8Array {
  switch (m.type) {
    case 'registered':
    case 'peer-info':
    case 'connect-error':
    case 'register-refused':
      return appendSignature(encodeRelayBody(m), m.signature)
    case 'connect': {
      const w = header(MessageType.connect).u32(m.requestId).shortBytes(m.target, 'target').u8(m.wantRelay ? 1 : 0).shortBytes(m.requester, 'requester').bytes(m.cookie)
      checkBounds(m)
      return w.finish()
    }
    case 'punch':
      checkBounds(m)
      return header(MessageType.punch).u64(m.session).u8(m.ack ? 1 : 0).finish()
  }
}

export interface Decoded<M extends RendezvousMessage = RendezvousMessage> {
  message: M
  /** for register and relay messages: the bytes the signature covers (for relay messages, before the recipient's peer id is appended) */
  signed?: Uint8Array
}

function readTimestamp (r: ByteReader, what: string): number {
  const v = r.u64(what)
  if (v > BigInt(MAX_TIMESTAMP_MS)) throw new WireError(`${what} out of range: ${v}`)
  return Number(v)
}

function readBool (r: ByteReader, what: string): boolean {
  const v = r.u8(what)
  if (v > 1) throw new WireError(`${what} must be 0 or 1, got ${v}`)
  return v === 1
}

function decodeUnchecked (buf: Uint8Array): Decoded {
  const r = new ByteReader(buf)
  if (r.u8('magic') !== MAGIC0 || r.u8('magic') !== MAGIC1) throw new WireError('bad magic')
  const version = r.u8('version')
  if (version !== VERSION) throw new WireError(`unsupported version ${version}`)
  const type = r.u8('type')
  switch (type) {
    case MessageType.register: {
      const timestampMs = readTimestamp(r, 'timestamp')
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
      const cookie = r.bytes(COOKIE_BYTES, 'cookie').slice()
      const echo = readTimestamp(r, 'echo')
      const signed = buf.subarray(0, r.position)
      const signature = r.bytes(SIGNATURE_BYTES, 'signature')
      r.end()
      return { message: { type: 'registered', observed, bootId, keepaliveMs, cookie, echo, signature }, signed }
    }
    case MessageType.connect: {
      const requestId = r.u32('request id')
      const target = r.shortBytes('target', 64)
      if (target.byteLength === 0) throw new WireError('empty target')
      const flags = r.u8('flags')
      const requester = r.shortBytes('requester', 64)
      if (requester.byteLength === 0) throw new WireError('empty requester')
      const cookie = r.bytes(COOKIE_BYTES, 'cookie').slice()
      r.end()
      return { message: { type: 'connect', requestId, target, wantRelay: (flags & 1) === 1, requester, cookie } }
    }
    case MessageType.peerInfo: {
      const requestId = r.u32('request id')
      const session = r.u64('session')
      const initiator = readBool(r, 'role')
      const peer = r.shortBytes('peer id', 64)
      if (peer.byteLength === 0) throw new WireError('empty peer id')
      const peerName = r.utf8('peer name', 253)
      const candidates = readCandidates(r)
      const directLocalId = r.u32('direct id')
      const directRemoteId = r.u32('direct id')
      const relayLocalId = r.u32('relay id')
      const relayRemoteId = r.u32('relay id')
      const echo = readTimestamp(r, 'echo')
      const signed = buf.subarray(0, r.position)
      const signature = r.bytes(SIGNATURE_BYTES, 'signature')
      r.end()
      return {
        message: { type: 'peer-info', requestId, session, initiator, peer, peerName, candidates, directLocalId, directRemoteId, relayLocalId, relayRemoteId, echo, signature },
        signed
      }
    }
    case MessageType.connectError: {
      const requestId = r.u32('request id')
      const code = r.u8('code')
      if (code < 1 || code > 4) throw new WireError(`unknown error code ${code}`)
      const reason = r.utf8('reason')
      const echo = readTimestamp(r, 'echo')
      const signed = buf.subarray(0, r.position)
      const signature = r.bytes(SIGNATURE_BYTES, 'signature')
      r.end()
      return { message: { type: 'connect-error', requestId, code: code as ConnectErrorCode, reason, echo, signature }, signed }
    }
    case MessageType.registerRefused: {
      const reason = r.u8('refusal reason')
      if (reason < 1 || reason > 2) throw new WireError(`unknown refusal reason ${reason}`)
      const echo = readTimestamp(r, 'echo')
      const signed = buf.subarray(0, r.position)
      const signature = r.bytes(SIGNATURE_BYTES, 'signature')
      r.end()
      return { message: { type: 'register-refused', reason: reason as RegisterRefusal, echo, signature }, signed }
    }
    case MessageType.punch: {
      const session = r.u64('session')
      const ack = readBool(r, 'ack')
      r.end()
      return { message: { type: 'punch', session, ack } }
    }
    default:
      throw new WireError(`unknown message type ${type}`)
  }
}

/** Decodes one datagram; throws WireError on malformed input or any field out of bounds. */
export function decodeMessage (buf: Uint8Array): Decoded {
  const d = decodeUnchecked(buf)
  checkBounds(d.message)
  return d
}
