// The SOCKS5 server handshake fuzzed with >= 1,000,000 inputs: random bytes, valid handshakes
// (with and without auth, every command and address type) and mutations of them, each fed
// whole, split at every byte boundary, and byte by byte. For every input: no throw; the same
// outcome and the same bytes written whatever the split; replies well formed; and every
// connection ends: a terminal state, or waiting for more after a short input (which the
// server's handshake timeout or the client's FIN ends), never after more bytes than the longest
// possible handshake (1,032).
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { ServerHandshake, type HandshakeStep } from '../../agent/socks5/handshake.ts'
import { AddressType, AuthMethod, Command, encodeGreeting, encodeRequest, encodeUserPass, parseReply } from '../../agent/socks5/wire.ts'

const LONGEST_HANDSHAKE = (2 + 255) + (3 + 255 + 255) + (4 + 1 + 255 + 2)
const verify = (u: Uint8Array, p: Uint8Array): boolean => u.length === 3 && p.length === 2 && u[0] === 0x6f && p[0] === 0x70

interface Outcome { state: HandshakeStep['state'], reason?: string, written: string, rest?: string, host?: string, consumed: number }

let inputs = 0

/** Feeds `chunks` to a fresh machine until it stops; returns what happened. */
function run (chunks: Uint8Array[], auth: boolean): Outcome {
  inputs++
  const h = new ServerHandshake(auth ? { verify } : {})
  const written: Uint8Array[] = []
  let consumed = 0
  let last: HandshakeStep = { state: 'more', write: [] }
  for (const c of chunks) {
    last = h.push(c)
    consumed += c.length
    written.push(...last.write)
    if (last.state !== 'more') break
  }
  const out: Outcome = { state: last.state, written: Buffer.concat(written).toString('hex'), consumed }
  if (last.state === 'refused') out.reason = last.reason
  if (last.state === 'request') { out.host = last.request.host; out.rest = Buffer.from(last.rest).toString('hex') }
  return out
}

/** What a terminal outcome says, independent of where the input was split (rest = everything after the handshake). */
function normalise (o: Outcome, total: Uint8Array): string {
  if (o.state === 'more') return `more|${o.written}`
  // bytes after a request that arrived in later chunks were not fed: add them back to rest
  const rest = o.state === 'request' ? o.rest! + Buffer.from(total.subarray(o.consumed)).toString('hex') : ''
  return `${o.state}|${o.reason ?? ''}|${o.host ?? ''}|${o.written}|${rest}`
}

function checkInvariants (o: Outcome, total: Uint8Array): void {
  const fail = (what: string): never => { throw new Error(`${Buffer.from(total).toString('hex')}: ${what} (${JSON.stringify(o)})`) }
  if (o.state === 'more' && total.length > LONGEST_HANDSHAKE) fail('still waiting after more bytes than any handshake has')
  // what is written: the method selection, the auth status, then at most one full RFC 1928 reply (10 bytes)
  const w = Buffer.from(o.written, 'hex')
  let i = 0
  if (w.length >= 2) { if (w[0] !== 5) fail('method selection is not SOCKS5'); i = 2 }
  if (w.length > 2 && w[2] === 1) i += 2
  if (i < w.length) {
    const r = parseReply(w.subarray(i))
    if (typeof r !== 'object' || r.length !== 10 || i + 10 !== w.length) fail('not one 10-byte reply')
  }
  if (o.state === 'request' && o.written.length > 8) fail('a request reached with a reply written')
}

/** Whole, split at every boundary, byte by byte: all the same outcome. */
function everySplit (bytes: Uint8Array, auth: boolean): void {
  const whole = run([bytes], auth)
  checkInvariants(whole, bytes)
  const expected = normalise(whole, bytes)
  // plain comparisons here: expect() per split would be most of the run time
  const same = (o: Outcome, how: string): void => {
    const got = normalise(o, bytes)
    if (got !== expected) throw new Error(`${Buffer.from(bytes).toString('hex')} split ${how}: ${got} instead of ${expected}`)
  }
  for (let i = 1; i < bytes.length; i++) same(run([bytes.subarray(0, i), bytes.subarray(i)], auth), `at ${i}`)
  if (bytes.length > 1) same(run([...bytes].map((b) => Uint8Array.of(b)), auth), 'byte by byte')
}

const domain = fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 40 })
const ip = fc.oneof(fc.ipV4(), fc.ipV6())
const target = fc.record({
  command: fc.constantFrom(Command.CONNECT, Command.CONNECT, Command.CONNECT, Command.BIND, Command.UDP_ASSOCIATE, 0, 9),
  host: fc.oneof({ arbitrary: domain, weight: 3 }, { arbitrary: ip, weight: 1 }),
  port: fc.integer({ min: 0, max: 65535 })
})
const handshake = fc.record({
  auth: fc.boolean(),
  methods: fc.array(fc.constantFrom(AuthMethod.NONE, AuthMethod.USERPASS, 1, 0x80, 0xff), { minLength: 0, maxLength: 4 }),
  offerWanted: fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, { arbitrary: fc.constant(false), weight: 1 }),
  user: fc.constantFrom('ops', 'ops', 'x', 'operator'),
  pass: fc.constantFrom('pw', 'pw', 'p', 'password'),
  target,
  trailer: fc.uint8Array({ maxLength: 6 })
}).map((h) => ({
  auth: h.auth,
  bytes: Buffer.concat([
    encodeGreeting(h.offerWanted || h.methods.length === 0 ? [...h.methods, h.auth ? AuthMethod.USERPASS : AuthMethod.NONE] : h.methods),
    ...(h.auth ? [encodeUserPass(h.user, h.pass)] : []),
    encodeRequest(h.target),
    h.trailer
  ])
}))

type Mutation = { kind: 'flip', at: number, value: number } | { kind: 'insert', at: number, value: number } | { kind: 'delete', at: number } | { kind: 'truncate', at: number }
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() })
)
function mutate (bytes: Uint8Array, ms: Mutation[]): Uint8Array {
  let b = [...bytes]
  for (const m of ms) {
    const at = b.length === 0 ? 0 : m.at % b.length
    if (m.kind === 'flip') b[at] = m.value
    else if (m.kind === 'insert') b.splice(at, 0, m.value)
    else if (m.kind === 'delete') b.splice(at, 1)
    else b = b.slice(0, at)
  }
  return Uint8Array.from(b)
}

describe('SOCKS5 handshake fuzz', () => {
  it('>= 1,000,000 inputs: no throw, same outcome at every split, well-formed replies, every connection ends', () => {
    inputs = 0
    const outcomes = new Map<string, number>()
    const tally = (o: Outcome): void => { const k = o.state === 'refused' ? `refused:${o.reason}` : o.state; outcomes.set(k, (outcomes.get(k) ?? 0) + 1) }

    // valid handshakes, every split
    fc.assert(fc.property(handshake, (h) => { everySplit(h.bytes, h.auth); tally(run([h.bytes], h.auth)) }), { numRuns: 14_000, seed: 12 })
    // mutated handshakes, every split
    fc.assert(fc.property(handshake, fc.array(mutation, { minLength: 1, maxLength: 3 }), (h, ms) => {
      const b = mutate(h.bytes, ms)
      everySplit(b, h.auth)
      tally(run([b], h.auth))
    }), { numRuns: 24_000, seed: 34 })
    // random bytes, some starting like SOCKS5 to get past the version check
    fc.assert(fc.property(fc.boolean(), fc.boolean(), fc.uint8Array({ maxLength: 64 }), (auth, socksy, raw) => {
      const b = socksy && raw.length > 0 ? Uint8Array.of(5, ...raw) : raw
      everySplit(b, auth)
      tally(run([b], auth))
    }), { numRuns: 14_000, seed: 56 })
    // long garbage: must end (terminal) well before it is all read
    fc.assert(fc.property(fc.boolean(), fc.uint8Array({ minLength: LONGEST_HANDSHAKE + 1, maxLength: 1600 }), (auth, raw) => {
      const o = run([Uint8Array.of(5, 1, auth ? 2 : 0, ...raw)], auth)
      expect(o.state).not.toBe('more')
    }), { numRuns: 2_000, seed: 78 })

    expect(inputs).toBeGreaterThanOrEqual(1_000_000)
    // the corpus reached every outcome
    for (const k of ['request', 'more', 'refused:malformed', 'refused:no-acceptable-method', 'refused:auth-failed', 'refused:command-not-supported', 'refused:address-type-not-supported']) expect(outcomes.get(k) ?? 0, k).toBeGreaterThan(0)
    console.log(`socks5 fuzz: ${inputs} inputs; outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`)
  })

  it('the longest valid handshake (255-byte credentials and name) is accepted', () => {
    const long = Buffer.concat([encodeGreeting([2]), encodeUserPass('o'.repeat(255), 'p'.repeat(255)), encodeRequest({ host: 'n'.repeat(255), port: 22, addressType: AddressType.DOMAIN })])
    expect(long.length).toBe(3 + 513 + 262)
    const h = new ServerHandshake({ verify: () => true })
    expect(h.push(long)).toMatchObject({ state: 'request', request: { port: 22 } })
  })
})
