// What signing relay-to-agent messages costs: the relay signs one `registered` per agent
// keepalive (~500/s at 1,000 agents and a 2 s keepalive) plus one peer-info per side of a
// connect; each agent verifies about one message per keepalive.
//   node test/bench/relay-sign.ts [iterations]
import { createHmac } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { RelayAuth } from '../../agent/tunnel/relay-auth.ts'
import { ed25519Signer, ed25519Verifier } from '../../shared/ed25519.ts'
import { decodeMessage, encodeRelayMessage, type RegisteredMessage } from '../../shared/wire/rendezvous.ts'

const N = Number(process.argv[2] ?? 20_000)
const relayKey = await generateKeyPair('Ed25519')
const agentKey = await generateKeyPair('Ed25519')
const recipient = peerIdFromPrivateKey(agentKey).toMultihash().bytes
const sign = ed25519Signer(relayKey)
const verify = ed25519Verifier(peerIdFromPrivateKey(relayKey))
const registered = { type: 'registered' as const, observed: { host: '198.51.100.20', port: 40123 }, bootId: 7, keepaliveMs: 2000, cookie: new Uint8Array(8), echo: Date.now() }
const wire = encodeRelayMessage(registered, recipient, sign)
const d = decodeMessage(wire)
const data = new Uint8Array([...d.signed!, ...recipient])
const sig = (d.message as RegisteredMessage).signature

async function time (name: string, n: number, fn: () => unknown): Promise<number> {
  for (let i = 0; i < Math.min(1000, n); i++) await fn() // warm up
  const t0 = performance.now()
  for (let i = 0; i < n; i++) await fn()
  const us = (performance.now() - t0) * 1000 / n
  console.log(`${name.padEnd(58)} ${us.toFixed(1).padStart(7)} µs`)
  return us
}

console.log(`message: registered, ${wire.byteLength} bytes on the wire (${data.byteLength} signed incl. the recipient's peer id); ${N} iterations`)
const signUs = await time('sign (node:crypto, KeyObject made once)', N, () => sign(data))
const verifyUs = await time('verify (node:crypto, KeyObject made once)', N, () => verify(data, sig))
await time('relay: encode + sign a registered', N, () => encodeRelayMessage(registered, recipient, sign))
const auth = new RelayAuth({ verify, self: recipient })
const echo = auth.nextRegisterTimestamp()
const freshWire = encodeRelayMessage({ ...registered, echo }, recipient, sign)
const fresh = decodeMessage(freshWire)
if (auth.check(fresh.message as RegisteredMessage, fresh.signed!, () => false).verdict !== 'ok') throw new Error('the genuine message did not check')
await time('agent: decode + check (echo, signature) a registered', N, () => {
  const x = decodeMessage(freshWire)
  return auth.check(x.message as RegisteredMessage, x.signed!, () => false)
})
await time('libp2p PrivateKey.sign (async, for comparison)', Math.ceil(N / 4), async () => await relayKey.sign(data))
await time('libp2p PublicKey.verify (async, for comparison)', Math.ceil(N / 4), async () => await relayKey.publicKey.verify(data, sig))
await time('HMAC-SHA256 (the MAC alternative)', N, () => createHmac('sha256', recipient).update(data).digest())
console.log(`relay at 1,000 agents (500 registered/s): ${(signUs * 500 / 1e4).toFixed(1)}% of one core for signing; an agent verifying one message per 2 s: ${(verifyUs / 2e4).toFixed(4)}% of a core`)
