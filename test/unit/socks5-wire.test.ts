import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { AddressType, AuthMethod, Command, encodeAuthStatus, encodeGreeting, encodeMethodSelection, encodeReply, encodeRequest, encodeUserPass, parseAuthStatus, parseGreeting, parseMethodSelection, parseReply, parseRequest, parseUserPass, Reply, replyText } from '../../agent/socks5/wire.ts'
import { ServerHandshake } from '../../agent/socks5/handshake.ts'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

describe('SOCKS5 wire', () => {
  it('encodes every reply as a full RFC 1928 reply: 10 bytes with an IPv4 address, never 2', () => {
    for (const code of Object.values(Reply)) {
      const r = encodeReply(code)
      expect(hex(r)).toBe(`05${code.toString(16).padStart(2, '0')}0001000000000000`)
      expect(parseReply(r)).toEqual({ value: { reply: code, addressType: AddressType.IPV4, host: '0.0.0.0', port: 0 }, length: 10 })
    }
    expect(hex(encodeReply(Reply.SUCCEEDED, { host: '10.1.2.3', port: 10800 }))).toBe('050000010a0102032a30')
    const v6 = encodeReply(Reply.SUCCEEDED, { host: '2001:db8::1', port: 22 })
    expect(v6.length).toBe(22)
    expect(parseReply(v6)).toEqual({ value: { reply: 0, addressType: AddressType.IPV6, host: '2001:db8:0:0:0:0:0:1', port: 22 }, length: 22 })
  })

  it('parses what the client encoders produce (greeting, credentials, requests by name, IPv4 and IPv6)', () => {
    expect(hex(encodeGreeting([AuthMethod.NONE, AuthMethod.USERPASS]))).toBe('05020002')
    expect(parseGreeting(encodeGreeting([0, 2]))).toEqual({ value: { methods: [0, 2] }, length: 4 })
    const up = parseUserPass(encodeUserPass('alice', 'sécret'))
    expect(typeof up === 'object' && Buffer.from(up.value.password).toString('utf8')).toBe('sécret')
    expect(hex(encodeRequest({ host: 'edge-1', port: 22 }))).toBe('050100030665646765' + '2d310016')
    expect(parseRequest(encodeRequest({ host: 'edge-1.edge', port: 22 }))).toEqual({ value: { command: Command.CONNECT, addressType: AddressType.DOMAIN, host: 'edge-1.edge', port: 22 }, length: 18 })
    expect(parseRequest(encodeRequest({ host: '10.0.0.7', port: 80 }))).toEqual({ value: { command: 1, addressType: AddressType.IPV4, host: '10.0.0.7', port: 80 }, length: 10 })
    expect(parseRequest(encodeRequest({ host: '::1', port: 80, command: Command.BIND }))).toEqual({ value: { command: 2, addressType: AddressType.IPV6, host: '0:0:0:0:0:0:0:1', port: 80 }, length: 22 })
    expect(parseRequest(encodeRequest({ host: '10.0.0.7', port: 80, addressType: AddressType.DOMAIN }))).toMatchObject({ value: { addressType: AddressType.DOMAIN, host: '10.0.0.7' } })
    expect(parseMethodSelection(encodeMethodSelection(AuthMethod.NO_ACCEPTABLE))).toEqual({ value: { method: 0xff }, length: 2 })
    expect(parseAuthStatus(encodeAuthStatus(false))).toEqual({ value: { ok: false, status: 1 }, length: 2 })
    expect(replyText(Reply.NOT_ALLOWED)).toBe('connection not allowed by ruleset')
  })

  it('answers short for every proper prefix and an error for malformed messages', () => {
    const req = encodeRequest({ host: 'svc.ns', port: 8080 })
    for (let i = 0; i < req.length; i++) expect(parseRequest(req.subarray(0, i))).toBe('short')
    expect(parseGreeting(Uint8Array.of(4, 1, 0))).toMatch(/not SOCKS5/)
    expect(parseGreeting(Uint8Array.of(5, 0))).toMatch(/no authentication method/)
    expect(parseRequest(Uint8Array.of(5, 1, 1, 3, 1, 0x61, 0, 22))).toMatch(/reserved/)
    expect(parseRequest(Uint8Array.of(5, 1, 0, 9, 0, 0))).toMatch(/address type 9/)
    expect(parseRequest(Uint8Array.of(5, 1, 0, 3, 0, 0, 22))).toMatch(/empty domain/)
    expect(parseUserPass(Uint8Array.of(1, 0))).toMatch(/empty username/)
  })

  it('round-trips any domain request (fast-check)', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 255 }), fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 255 }), (host, port, command) => {
      const b = encodeRequest({ host, port, command, addressType: AddressType.DOMAIN })
      expect(parseRequest(b)).toEqual({ value: { command, addressType: AddressType.DOMAIN, host, port }, length: b.length })
    }), { numRuns: 2000 })
  })
})

describe('ServerHandshake', () => {
  const verify = (u: Uint8Array, p: Uint8Array): boolean => Buffer.from(u).toString() === 'ops' && Buffer.from(p).toString() === 'pw'

  it('no auth: greeting then CONNECT to a name; bytes after the request are handed over', () => {
    const h = new ServerHandshake()
    const s1 = h.push(encodeGreeting([AuthMethod.NONE]))
    expect(s1.state).toBe('more')
    expect(s1.write.map(hex)).toEqual(['0500'])
    const s2 = h.push(Buffer.concat([encodeRequest({ host: 'edge-7', port: 22 }), Buffer.from('SSH-2.0')]))
    expect(s2).toMatchObject({ state: 'request', write: [], request: { host: 'edge-7', port: 22 } })
    expect(s2.state === 'request' && Buffer.from(s2.rest).toString()).toBe('SSH-2.0')
  })

  it('auth on: all three messages in one chunk; wrong password answered 01 01', () => {
    const all = Buffer.concat([encodeGreeting([0, 2]), encodeUserPass('ops', 'pw'), encodeRequest({ host: 'a.b', port: 1 })])
    const ok = new ServerHandshake({ verify }).push(all)
    expect(ok).toMatchObject({ state: 'request', username: 'ops', request: { host: 'a.b', port: 1 } })
    expect(ok.write.map(hex)).toEqual(['0502', '0100'])
    const bad = new ServerHandshake({ verify }).push(Buffer.concat([encodeGreeting([2]), encodeUserPass('ops', 'nope')]))
    expect(bad).toMatchObject({ state: 'refused', reason: 'auth-failed' })
    expect(bad.write.map(hex)).toEqual(['0502', '0101'])
  })

  it('a client offering no acceptable method gets 05 FF', () => {
    expect(new ServerHandshake({ verify }).push(encodeGreeting([0]))).toMatchObject({ state: 'refused', reason: 'no-acceptable-method', write: [encodeMethodSelection(0xff)] })
    expect(new ServerHandshake().push(encodeGreeting([2]))).toMatchObject({ state: 'refused', reason: 'no-acceptable-method' })
  })

  it('BIND and UDP ASSOCIATE get 0x07, IP targets 0x08, an unknown address type 0x08, a bad reserved byte 0x01', () => {
    const run = (req: Uint8Array): ReturnType<ServerHandshake['push']> => { const h = new ServerHandshake(); h.push(encodeGreeting([0])); return h.push(req) }
    expect(run(encodeRequest({ host: 'edge-1', port: 22, command: Command.BIND }))).toMatchObject({ state: 'refused', reason: 'command-not-supported', write: [encodeReply(Reply.COMMAND_NOT_SUPPORTED)] })
    expect(run(encodeRequest({ host: 'edge-1', port: 22, command: Command.UDP_ASSOCIATE }))).toMatchObject({ state: 'refused', reason: 'command-not-supported' })
    expect(run(encodeRequest({ host: '10.0.0.1', port: 22 }))).toMatchObject({ state: 'refused', reason: 'address-type-not-supported', write: [encodeReply(Reply.ADDRESS_TYPE_NOT_SUPPORTED)] })
    expect(run(encodeRequest({ host: 'fe80::1', port: 22 }))).toMatchObject({ state: 'refused', reason: 'address-type-not-supported' })
    expect(run(Uint8Array.of(5, 1, 0, 7, 1, 2))).toMatchObject({ state: 'refused', reason: 'address-type-not-supported', write: [encodeReply(Reply.ADDRESS_TYPE_NOT_SUPPORTED)] })
    expect(run(Uint8Array.of(5, 1, 9, 3, 1, 0x61, 0, 22))).toMatchObject({ state: 'refused', reason: 'malformed', write: [encodeReply(Reply.GENERAL_FAILURE)] })
  })

  it('a SOCKS4 or HTTP client is closed without a reply', () => {
    expect(new ServerHandshake().push(Buffer.from('GET / HTTP/1.1\r\n'))).toMatchObject({ state: 'refused', reason: 'malformed', write: [] })
    expect(new ServerHandshake().push(Uint8Array.of(4, 1, 0, 22, 10, 0, 0, 1, 0))).toMatchObject({ state: 'refused', reason: 'malformed', write: [] })
  })
})
