// A stranger (or a member) at the relay's door, run inside a lab namespace:
//   node test/lab/relay-probe.ts '<json>'
// `rendezvous`: fresh Ed25519 keys, each on its own UDP socket, register in turn (with the PSK
// file's MAC, another key's, or none) and then send connect requests; prints which keys got a
// `registered` answer (or a `register-refused` with its reason) and what each connect got back
// (peer-info with its candidates and relay ids, a connect-error code, or nothing).
// `reserve`: fresh libp2p nodes (TCP + noise + yamux, pnet with the given file or none) dial the
// relay one after another and ask for a circuit relay v2 reservation by hand (HOP RESERVE);
// prints how each dial went and the status (and limit) the relay answered.
// One JSON line on stdout. Uses the repository's own codecs, so it speaks what the agents speak.
import { createSocket } from 'node:dgram'
import { readFile } from 'node:fs/promises'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { preSharedKey } from '@libp2p/pnet'
import { RELAY_V2_HOP_CODEC } from '@libp2p/circuit-relay-v2'
import { multiaddr } from '@multiformats/multiaddr'
import { noiseCrypto } from '../../shared/noise-crypto.ts'
import { peerIdFromBytes } from '../../shared/peer-id.ts'
import { pskMac } from '../../shared/wire/auth.ts'
import { COOKIE_BYTES, decodeMessage, encodeMessage, encodeRegister, encodeRegisterBody } from '../../shared/wire/rendezvous.ts'
import { readStream, send } from '../../agent/tunnel/stream-io.ts'

interface RendezvousPlan {
  kind: 'rendezvous'
  relay: { host: string, port: number }
  /** swarm.key to MAC registrations with; null: no MAC */
  pskFile: string | null
  keys: number
  /** connect requests sent by key `from` (all at once), in order; `wrongCookie`: not the one its `registered` carried */
  connects?: Array<{ from: number, target: string, wantRelay: boolean, count: number, wrongCookie?: boolean }>
}

interface ReservePlan {
  kind: 'reserve'
  /** /ip4/<relay>/tcp/4001/p2p/<relay peer id> */
  relay: string
  pskFile: string | null
  count: number
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

async function rendezvous (plan: RendezvousPlan): Promise<unknown> {
  const psk = plan.pskFile != null ? new Uint8Array(await readFile(plan.pskFile)) : undefined
  const keys: Array<{ peerId: string, peerIdBytes: Uint8Array, registered: boolean, refused: number | null, cookie: Uint8Array<ArrayBufferLike>, replies: Map<number, unknown>, socket: ReturnType<typeof createSocket> }> = []
  try {
    for (let i = 0; i < plan.keys; i++) {
      const privateKey = await generateKeyPair('Ed25519')
      const peerId = peerIdFromPrivateKey(privateKey)
      const socket = createSocket('udp4')
      await new Promise<void>((resolve) => socket.bind(0, resolve))
      const key = { peerId: peerId.toString(), peerIdBytes: peerId.toMultihash().bytes, registered: false, refused: null as number | null, cookie: new Uint8Array(COOKIE_BYTES) as Uint8Array<ArrayBufferLike>, replies: new Map<number, unknown>(), socket }
      keys.push(key)
      socket.on('message', (buf) => {
        let m
        try { m = decodeMessage(buf).message } catch { return }
        if (m.type === 'registered') { key.registered = true; key.cookie = m.cookie }
        if (m.type === 'register-refused') key.refused = m.reason
        if (m.type === 'peer-info' && m.requestId !== 0) {
          key.replies.set(m.requestId, { type: 'peer-info', peer: peerIdFromBytes(m.peer).toString(), candidates: m.candidates.length, relayLocalId: m.relayLocalId, relayRemoteId: m.relayRemoteId })
        }
        if (m.type === 'connect-error') key.replies.set(m.requestId, { type: 'connect-error', code: m.code, reason: m.reason })
      })
      const body = encodeRegisterBody({ timestampMs: Date.now(), peerId: key.peerIdBytes, nodeName: `probe-${i}`, candidates: [] })
      const datagram = encodeRegister(body, await privateKey.sign(body), pskMac(psk, body))
      // registered one after another, so "the first N" are these keys; a refused one is retried
      for (let attempt = 0; attempt < 6 && !key.registered; attempt++) {
        socket.send(datagram, plan.relay.port, plan.relay.host)
        for (let t = 0; t < 10 && !key.registered; t++) await sleep(30)
      }
    }
    const connects: Array<{ from: number, requestId: number, reply: unknown }> = []
    for (const c of plan.connects ?? []) {
      const key = keys[c.from]!
      const ids: number[] = []
      for (let n = 0; n < c.count; n++) {
        const requestId = 1000 + connects.length + ids.length
        ids.push(requestId)
        const cookie = c.wrongCookie === true ? key.cookie.map((b) => b ^ 0xff) : key.cookie
        key.socket.send(encodeMessage({ type: 'connect', requestId, target: peerIdFromString(c.target).toMultihash().bytes, wantRelay: c.wantRelay, requester: key.peerIdBytes, cookie }), plan.relay.port, plan.relay.host)
      }
      for (let t = 0; t < 50 && ids.some((id) => !key.replies.has(id)); t++) await sleep(40)
      for (const requestId of ids) connects.push({ from: c.from, requestId, reply: key.replies.get(requestId) ?? null })
    }
    return { keys: keys.map((k) => ({ peerId: k.peerId, registered: k.registered, refused: k.refused })), connects }
  } finally {
    for (const k of keys) k.socket.close()
  }
}


/** Reads a protobuf varint at `pos` of `b`: [value, next position]. */
function varint (b: Uint8Array, pos: number): [bigint, number] {
  let v = 0n; let shift = 0n
  for (;;) {
    const byte = b[pos++]
    if (byte === undefined) throw new Error('truncated varint')
    v |= BigInt(byte & 0x7f) << shift
    if ((byte & 0x80) === 0) return [v, pos]
    shift += 7n
  }
}

/** The fields of a protobuf message as field number -> varint value or bytes (last wins). */
function fields (b: Uint8Array): Map<number, bigint | Uint8Array> {
  const out = new Map<number, bigint | Uint8Array>()
  let pos = 0
  while (pos < b.byteLength) {
    const [tag, p1] = varint(b, pos)
    const field = Number(tag >> 3n); const wire = Number(tag & 7n)
    if (wire === 0) { const [v, p2] = varint(b, p1); out.set(field, v); pos = p2 } else if (wire === 2) {
      const [len, p2] = varint(b, p1)
      out.set(field, b.subarray(p2, p2 + Number(len))); pos = p2 + Number(len)
    } else throw new Error(`unexpected wire type ${wire}`)
  }
  return out
}

const STATUS: Record<number, string> = { 100: 'OK', 200: 'RESERVATION_REFUSED', 201: 'RESOURCE_LIMIT_EXCEEDED', 202: 'PERMISSION_DENIED', 203: 'CONNECTION_FAILED', 204: 'NO_RESERVATION', 400: 'MALFORMED_MESSAGE', 401: 'UNEXPECTED_MESSAGE' }

async function reserve (plan: ReservePlan): Promise<unknown> {
  const psk = plan.pskFile != null ? new Uint8Array(await readFile(plan.pskFile)) : undefined
  const nodes: Array<Awaited<ReturnType<typeof createLibp2p>>> = []
  const results: unknown[] = []
  try {
    for (let i = 0; i < plan.count; i++) {
      const node = await createLibp2p({
        transports: [tcp()],
        connectionEncrypters: [noise({ crypto: noiseCrypto })],
        streamMuxers: [yamux()],
        ...(psk != null ? { connectionProtector: preSharedKey({ psk }) } : {}),
        connectionGater: { denyDialMultiaddr: () => false }
      })
      nodes.push(node)
      let stream
      try {
        stream = await node.dialProtocol(multiaddr(plan.relay), RELAY_V2_HOP_CODEC, { signal: AbortSignal.timeout(10_000) })
      } catch (err: any) {
        results.push({ dial: 'failed', error: `${err?.name}: ${err?.message}` })
        continue
      }
      // HopMessage { type: RESERVE (0) }, length-prefixed
      await send(stream, Uint8Array.of(2, 0x08, 0x00))
      let buf = new Uint8Array(0)
      for await (const chunk of readStream(stream)) {
        const joined = new Uint8Array(buf.byteLength + chunk.byteLength); joined.set(buf); joined.set(chunk, buf.byteLength); buf = joined
        try { const [len, p] = varint(buf, 0); if (buf.byteLength >= p + Number(len)) break } catch {}
      }
      const [len, p] = varint(buf, 0)
      const hop = fields(buf.subarray(p, p + Number(len)))
      const limitBytes = hop.get(4)
      const limit = limitBytes instanceof Uint8Array ? fields(limitBytes) : undefined
      results.push({
        dial: 'ok',
        status: STATUS[Number(hop.get(5) ?? 0n)] ?? String(hop.get(5)),
        ...(limit != null ? { limit: { duration: limit.get(1)?.toString(), data: limit.get(2)?.toString() } } : {})
      })
    }
    return { results }
  } finally {
    await Promise.all(nodes.map(async (n) => { await n.stop() }))
  }
}

const plan = JSON.parse(process.argv[2] ?? '{}') as RendezvousPlan | ReservePlan
const out = plan.kind === 'rendezvous' ? await rendezvous(plan) : await reserve(plan)
process.stdout.write(`${JSON.stringify(out)}\n`)
process.exit(0)
