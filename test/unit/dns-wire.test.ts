// The DNS wire codec: query parsing (and every way it refuses a query), response encoding
// byte for byte, name compression, truncation, EDNS, upstream response metadata, and a fuzz of
// well over a million random and mutated messages through the parsers.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { dashedIP, formatIPv6, parseDashedIP, parseIP, parseIPv4, parseIPv6, reverseName } from '../../agent/dns/ip.ts'
import {
  CLASS, copyResponse, decodeMessage, encodeError, encodeQuery, encodeRcode, encodeResponse, encodeResponseSet, MAX_MESSAGE, nameToWire,
  parseQuery, parseResponseMeta, patchHeader, Query, questionMatches, RCODE, skipName, TYPE, wireStats, writeResponse,
  type QueryError, type QueryFailure, type ResponseMeta, type RR
} from '../../agent/dns/wire.ts'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const wireName = (name: string): string => Buffer.from(nameToWire(name)).toString('hex')
const asQuery = (r: Query | QueryError): Query => {
  if (!(r instanceof Query)) throw new Error(`expected a query, got ${JSON.stringify(r)}`)
  return r
}
const asFailure = (r: Query | QueryError): QueryFailure => {
  if (r instanceof Query || r.error === 'drop') throw new Error(`expected a failure, got ${r instanceof Query ? 'a query' : 'drop'}`)
  return r
}
const meta = (m: Uint8Array): ResponseMeta => {
  const r = parseResponseMeta(m)
  if ('error' in r) throw new Error('malformed')
  return r
}

const WEB = 'web.default.svc.cluster.local'
const A_WEB: RR = { name: WEB, type: TYPE.A, ttl: 5, data: '10.96.0.10' }

describe('parseQuery', () => {
  it('reads header, question and EDNS; hashes case-insensitively; decodes the name lazily', () => {
    const q = asQuery(parseQuery(encodeQuery({ id: 0xbeef, name: 'Web.Default.SVC.cluster.local', type: TYPE.AAAA, rd: true, cd: true, edns: { udpSize: 4096, do: true } })))
    expect([q.id, q.rd, q.cd, q.qtype, q.qclass, q.edns, q.udpSize, q.dnssecOk, q.maxUdp, q.mixedCase, q.compressed]).toEqual([0xbeef, true, true, TYPE.AAAA, CLASS.IN, true, 4096, true, 1232, true, false])
    expect(q._qname).toBeUndefined()
    expect(q.qname).toBe(WEB)
    expect(q.key).toBe(`${WEB}|28|1|1`)
    expect(q.qnameEnd).toBe(12 + nameToWire(WEB).length)
    expect(q.questionEnd).toBe(q.qnameEnd + 4)
    const lower = asQuery(parseQuery(encodeQuery({ id: 1, name: WEB, type: TYPE.AAAA, edns: { udpSize: 512 } })))
    expect(lower.hash).toBe(q.hash)
    expect(lower.mixedCase).toBe(false)
    const noEdns = asQuery(parseQuery(encodeQuery({ id: 1, name: WEB, type: TYPE.AAAA })))
    expect(noEdns.hash).not.toBe(q.hash)
    expect([noEdns.edns, noEdns.maxUdp, noEdns.rd]).toEqual([false, 512, false])
    expect(asQuery(parseQuery(encodeQuery({ id: 1, name: WEB, type: TYPE.A }))).hash).not.toBe(noEdns.hash)
  })

  it('clamps the EDNS payload size to [512, 1232] and tolerates options', () => {
    const small = asQuery(parseQuery(encodeQuery({ id: 1, name: 'a', type: 1, edns: { udpSize: 100 } })))
    expect(small.maxUdp).toBe(512)
    const cookie = { code: 10, data: new Uint8Array(8).fill(7) }
    const q = asQuery(parseQuery(encodeQuery({ id: 1, name: 'a', type: 1, edns: { udpSize: 1400, options: [cookie, { code: 12, data: new Uint8Array(0) }] } })))
    expect([q.edns, q.maxUdp]).toEqual([true, 1232])
  })

  it('reuses a Query object and forgets the previous name', () => {
    const q = new Query()
    parseQuery(encodeQuery({ id: 1, name: 'one.example', type: 1 }), q)
    expect(q.qname).toBe('one.example')
    expect(parseQuery(encodeQuery({ id: 2, name: 'two.example', type: 1 }), q)).toBe(q)
    expect([q.id, q.qname]).toEqual([2, 'two.example'])
  })

  it('handles the root name and escapes odd bytes in the text form', () => {
    const root = asQuery(parseQuery(encodeQuery({ id: 1, name: '', type: TYPE.SOA })))
    expect([root.qname, root.questionEnd]).toEqual(['', 17])
    const odd = asQuery(parseQuery(hex('0001 0000 0001 0000 0000 0000  03 612e62 02 5c20 01 41 00  0001 0001')))
    expect(odd.escaped).toBe(true)
    expect(odd.qname).toBe('a\\.b.\\\\\\032.a')
    expect(Buffer.from(nameToWire(odd.qname)).toString('hex')).toBe('03612e62025c200161' + '00')
  })

  it('follows a compression pointer in the question only backwards, past the header, loop-free', () => {
    // a pointer can only target the name itself (the header precedes it): into a label's
    // content, where a 0 byte ends the name. 12: label "\0a"; 15: pointer to 13 (the 0 byte)
    const q = asQuery(parseQuery(hex('0001 0000 0001 0000 0000 0000  02 0061 c00d  0001 0001')))
    expect([q.compressed, q.qnameEnd, q.qname, q.qtype]).toEqual([true, 17, '\\000a', 1])
    // to a label start: loops until the 255-byte limit
    expect(asFailure(parseQuery(hex('0001 0000 0001 0000 0000 0000  01 61 c0 0c  0001 0001'))).error).toBe('formerr')
    expect(asFailure(parseQuery(hex('0001 0000 0001 0000 0000 0000  01 61 02 6363 c0 0e 0001 0001'))).error).toBe('formerr')
    // into the header, forwards, or onto itself
    expect(asFailure(parseQuery(hex('0001 0000 0001 0000 0000 0000  01 61 c0 02  0001 0001'))).error).toBe('formerr')
    expect(asFailure(parseQuery(hex('0001 0000 0001 0000 0000 0000  01 61 c0 14  0001 0001 00'))).error).toBe('formerr')
    expect(asFailure(parseQuery(hex('0001 0000 0001 0000 0000 0000  01 61 c0 0e  0001 0001'))).error).toBe('formerr')
  })

  it('drops responses and runts, refuses bad opcodes, counts and names', () => {
    expect(parseQuery(new Uint8Array(11))).toEqual({ error: 'drop' })
    const resp = encodeQuery({ id: 1, name: 'a', type: 1 })
    resp[2]! |= 0x80
    expect(parseQuery(resp)).toEqual({ error: 'drop' })

    const notify = encodeQuery({ id: 7, name: 'a.example', type: TYPE.SOA })
    notify[2] = (4 << 3) | 0x01 // NOTIFY, RD
    const f = asFailure(parseQuery(notify))
    expect([f.error, f.id, f.questionEnd]).toEqual(['notimp', 7, notify.length])

    const two = encodeQuery({ id: 1, name: 'a', type: 1 })
    two[5] = 2
    expect(asFailure(parseQuery(two)).error).toBe('formerr')
    const none = encodeQuery({ id: 1, name: 'a', type: 1 })
    none[5] = 0
    expect(asFailure(parseQuery(none)).error).toBe('formerr')

    const longLabel = Buffer.concat([hex('0001 0000 0001 0000 0000 0000'), Buffer.from([64]), Buffer.alloc(64, 0x61), hex('00 0001 0001')])
    expect(asFailure(parseQuery(longLabel)).error).toBe('formerr')
    const labels = Array.from({ length: 128 }, () => '01 61').join('') // 256 bytes of name
    expect(asFailure(parseQuery(hex('0001 0000 0001 0000 0000 0000' + labels + '00 0001 0001'))).error).toBe('formerr')
    const max = Array.from({ length: 127 }, () => '01 61').join('') // 254 + root = 255: the limit
    expect(asQuery(parseQuery(hex('0001 0000 0001 0000 0000 0000' + max + '00 0001 0001'))).qname).toHaveLength(253)
    expect(asFailure(parseQuery(hex('0001 0000 0001 0000 0000 0000 03 6162'))).error).toBe('formerr')
    expect(asFailure(parseQuery(hex('0001 0000 0001 0000 0000 0000 01 61 00 0001'))).error).toBe('formerr')
    expect(asFailure(parseQuery(hex('0001 0000 0001 0000 0000 0000 41 61 00 0001 0001'))).error).toBe('formerr') // 0x40 label type
  })

  it('refuses zone transfers and qtype OPT', () => {
    for (const t of [TYPE.AXFR, TYPE.IXFR, TYPE.MAILA, TYPE.MAILB]) expect(asFailure(parseQuery(encodeQuery({ id: 1, name: 'a', type: t }))).error).toBe('notimp')
    expect(asFailure(parseQuery(encodeQuery({ id: 1, name: 'a', type: TYPE.OPT }))).error).toBe('formerr')
  })

  it('validates the OPT record (RFC 6891)', () => {
    const v1 = asFailure(parseQuery(encodeQuery({ id: 3, name: 'a', type: 1, edns: { version: 1, do: true } })))
    expect([v1.error, v1.edns, v1.dnssecOk]).toEqual(['badvers', true, true])
    const q = encodeQuery({ id: 1, name: 'a', type: 1, edns: {} })
    const twice = Buffer.concat([q, q.subarray(q.length - 11)])
    twice[11] = 2
    expect(asFailure(parseQuery(twice)).error).toBe('formerr')
    const owned = Buffer.concat([q.subarray(0, q.length - 11), hex('01 61'), q.subarray(q.length - 10)])
    expect(asFailure(parseQuery(owned)).error).toBe('formerr')
    const inAnswer = Buffer.from(q)
    inAnswer[7] = 1
    inAnswer[11] = 0
    expect(asFailure(parseQuery(inAnswer)).error).toBe('formerr')
    const badOption = encodeQuery({ id: 1, name: 'a', type: 1, edns: { options: [{ code: 10, data: new Uint8Array(4) }] } })
    badOption[badOption.length - 5] = 9 // option length past the rdata
    expect(asFailure(parseQuery(badOption)).error).toBe('formerr')
    const cut = q.subarray(0, q.length - 1)
    expect(asFailure(parseQuery(cut)).error).toBe('formerr')
    // other additional records (e.g. a TSIG we do not check) are skipped
    const extra = Buffer.concat([q, hex('00 00fa 00ff 00000000 0000')])
    extra[11] = 2
    expect(asQuery(parseQuery(extra)).edns).toBe(true)
  })

  it('parses any class; only the server decides what to do with it', () => {
    const ch = asQuery(parseQuery(encodeQuery({ id: 1, name: 'version.bind', type: TYPE.TXT, class: CLASS.CH })))
    expect([ch.qclass, ch.qname]).toEqual([CLASS.CH, 'version.bind'])
  })
})

describe('error responses', () => {
  it('FORMERR echoes the ID, opcode and RD, without a question when it did not parse', () => {
    const bad = encodeQuery({ id: 0x4242, name: 'a', type: 1, rd: true })
    bad[5] = 2
    const r = encodeError(bad, asFailure(parseQuery(bad)))
    expect(r.toString('hex')).toBe('4242' + '8181' + '0000 0000 0000 0000'.replace(/ /g, ''))
  })

  it('NOTIMP echoes the opcode and the question', () => {
    const q = encodeQuery({ id: 9, name: 'a', type: TYPE.SOA })
    q[2] = 5 << 3 // UPDATE
    const r = encodeError(q, asFailure(parseQuery(q)))
    expect(r.toString('hex')).toBe('0009' + 'a884' + '0001 0000 0000 0000 0161 00 0006 0001'.replace(/ /g, ''))
  })

  it('BADVERS carries the extended rcode in an OPT with version 0 and the DO bit', () => {
    const q = encodeQuery({ id: 1, name: 'a', type: 1, edns: { version: 2, do: true } })
    const r = encodeError(q, asFailure(parseQuery(q)))
    expect(r.toString('hex')).toBe('0001 8080 0001 0000 0000 0001 0161 00 0001 0001 00 0029 04d0 01 00 8000 0000'.replace(/ /g, ''))
    const m = decodeMessage(r)!
    expect([m.rcode, m.opt?.version, m.opt?.do]).toEqual([RCODE.BADVERS, 0, true])
  })

  it('encodeRcode answers with just the question (e.g. REFUSED, SERVFAIL)', () => {
    const q = asQuery(parseQuery(encodeQuery({ id: 5, name: 'x', type: 1, rd: true, edns: {} })))
    const m = decodeMessage(encodeRcode(q, RCODE.SERVFAIL))!
    expect([m.id, m.rcode, m.rd, m.ra, m.aa, m.questions, m.answers.length, m.opt?.udpSize]).toEqual([5, 2, true, true, false, [{ name: 'x', type: 1, class: 1 }], 0, 1232])
  })
})

describe('encodeResponse', () => {
  const q = (o: Partial<Parameters<typeof encodeQuery>[0]> = {}): Query => asQuery(parseQuery(encodeQuery({ id: 0x1234, name: WEB, type: TYPE.A, rd: true, ...o })))
  const QUESTION = wireName(WEB) + '0001 0001'

  it('an A answer, byte for byte: the owner points at the question', () => {
    const r = encodeResponse(q(), { rcode: 0, aa: true, answers: [A_WEB] })
    expect(r.toString('hex')).toBe(('1234 8580 0001 0001 0000 0000' + QUESTION + 'c00c 0001 0001 00000005 0004 0a60000a').replace(/ /g, ''))
  })

  it('NXDOMAIN with the SOA, names compressed against the question suffixes', () => {
    const soa: RR = { name: 'cluster.local', type: TYPE.SOA, ttl: 5, data: { mname: 'ns.dns.cluster.local', rname: 'hostmaster.cluster.local', serial: 7, refresh: 7200, retry: 1800, expire: 86400, minimum: 5 } }
    const r = encodeResponse(q({ rd: false }), { rcode: RCODE.NXDOMAIN, aa: true, authority: [soa] })
    // "cluster.local" starts at 12 + 4 + 8 + 4 = 28 = 0x1c
    const rdata = '026e73 03646e73 c01c' + '0a686f73746d6173746572 c01c' + '00000007 00001c20 00000708 00015180 00000005'
    const rdlen = hex(rdata).length.toString(16).padStart(4, '0')
    expect(r.toString('hex')).toBe(('1234 8483 0001 0000 0001 0000' + QUESTION + 'c01c 0006 0001 00000005' + rdlen + rdata).replace(/ /g, ''))
  })

  it('SRV targets are written in full, later owners point at them; OPT echoed last', () => {
    const srvName = '_http._tcp.' + WEB
    const query = asQuery(parseQuery(encodeQuery({ id: 1, name: srvName, type: TYPE.SRV, edns: { udpSize: 1232, do: true } })))
    const r = encodeResponse(query, {
      rcode: 0,
      aa: true,
      answers: [{ name: srvName, type: TYPE.SRV, ttl: 5, data: { priority: 0, weight: 100, port: 80, target: WEB } }],
      additional: [A_WEB]
    })
    const qn = wireName(srvName)
    // the target is written in full; the A record's owner points at the copy inside the question
    const webInQuestion = 12 + '_http'.length + 1 + '_tcp'.length + 1
    const rdata = '0000 0064 0050' + wireName(WEB)
    expect(r.toString('hex')).toBe(('0001 8480 0001 0001 0000 0002' + qn + '0021 0001' +
      'c00c 0021 0001 00000005' + (hex(rdata).length).toString(16).padStart(4, '0') + rdata +
      'c0' + webInQuestion.toString(16) + ' 0001 0001 00000005 0004 0a60000a' +
      '00 0029 04d0 00 00 8000 0000').replace(/ /g, ''))
  })

  it('round trips every record type through decodeMessage', () => {
    const query = q({ type: TYPE.ANY, edns: {} })
    const rrs: RR[] = [
      A_WEB,
      { name: WEB, type: TYPE.AAAA, ttl: 5, data: 'fd00::10' },
      { name: 'ext.default.svc.cluster.local', type: TYPE.CNAME, ttl: 6, data: 'www.example.com' },
      { name: '10.0.96.10.in-addr.arpa', type: TYPE.PTR, ttl: 7, data: WEB },
      { name: 'x.' + WEB, type: TYPE.NS, ttl: 7, data: 'ns.example.com' },
      { name: '_p._udp.' + WEB, type: TYPE.SRV, ttl: 8, data: { priority: 1, weight: 2, port: 53, target: WEB } },
      { name: 'dns-version.cluster.local', type: TYPE.TXT, ttl: 9, data: ['1.1.0', '', 'x'.repeat(300)] },
      { name: 'cluster.local', type: TYPE.SOA, ttl: 10, data: { mname: 'ns.dns.cluster.local', rname: 'hostmaster.cluster.local', serial: 0xffffffff, refresh: 1, retry: 2, expire: 3, minimum: 4 } }
    ]
    const m = decodeMessage(encodeResponse(query, { rcode: 0, aa: true, answers: rrs, authority: [rrs[7]!], additional: [rrs[1]!] }, { maxSize: MAX_MESSAGE }))!
    const plain = (r: RR): unknown => ({ name: r.name, type: r.type, class: 1, ttl: r.ttl, data: r.type === TYPE.TXT ? ['1.1.0', '', 'x'.repeat(255), 'x'.repeat(45)] : r.data })
    expect(m.answers).toEqual(rrs.map(plain))
    expect(m.authority).toEqual([plain(rrs[7]!)])
    expect(m.additional).toEqual([plain(rrs[1]!)])
    expect([m.qr, m.aa, m.rd, m.ra, m.tc, m.rcode, m.opt?.udpSize]).toEqual([true, true, true, true, false, 0, 1232])
  })

  it('keeps the client spelling of the question, compresses case-insensitively', () => {
    const query = asQuery(parseQuery(encodeQuery({ id: 1, name: 'WeB.DeFault.svc.cluster.local', type: TYPE.A })))
    const r = encodeResponse(query, { rcode: 0, answers: [A_WEB] })
    const m = decodeMessage(r)!
    expect(m.questions[0]!.name).toBe('WeB.DeFault.svc.cluster.local')
    expect(r.length).toBe(12 + query.questionEnd - 12 + 16) // the owner is a pointer
  })

  it('drops the additional section first, then truncates with TC (and keeps the OPT)', () => {
    const srvName = '_http._tcp.' + WEB
    const query = asQuery(parseQuery(encodeQuery({ id: 1, name: srvName, type: TYPE.SRV, edns: {} })))
    const answers: RR[] = Array.from({ length: 8 }, (_, i) => ({ name: srvName, type: TYPE.SRV, ttl: 5, data: { priority: 0, weight: 100, port: 80, target: `host-${i}.${WEB}` } }))
    const additional: RR[] = answers.map((a, i) => ({ name: (a.data as { target: string }).target, type: TYPE.A, ttl: 5, data: `10.0.0.${i}` }))
    const r = { rcode: 0, aa: true, answers, additional }
    const full = encodeResponse(query, r, { maxSize: MAX_MESSAGE })
    const noAdd = encodeResponse(query, { ...r, additional: [] }, { maxSize: MAX_MESSAGE })
    expect(full.length).toBeGreaterThan(noAdd.length)
    expect(encodeResponse(query, r, { maxSize: full.length })).toEqual(full)
    const dropped = decodeMessage(encodeResponse(query, r, { maxSize: full.length - 1 }))!
    expect([dropped.tc, dropped.answers.length, dropped.additional.length, dropped.opt != null]).toEqual([false, 8, 0, true])
    const tc = encodeResponse(query, r, { maxSize: noAdd.length - 1 })
    const m = decodeMessage(tc)!
    expect([m.tc, m.answers.length, m.authority.length, m.additional.length, m.opt != null, m.questions[0]!.name]).toEqual([true, 0, 0, 0, true, srvName])
    expect(tc.length).toBe(query.questionEnd + 11)
    // the default limit is the query's: 512 without EDNS
    const plainQ = asQuery(parseQuery(encodeQuery({ id: 1, name: srvName, type: TYPE.SRV })))
    expect(decodeMessage(encodeResponse(plainQ, { rcode: 0, answers: answers.concat(answers, answers) }))!.tc).toBe(true)
    // the three shapes for the cache
    const set = encodeResponseSet(query, r)
    expect([set.full, set.noAdditional, set.truncated]).toEqual([full, noAdd, tc])
    const small = encodeResponseSet(query, { rcode: 0, answers: [answers[0]!] })
    expect([small.noAdditional, small.truncated]).toEqual([undefined, undefined])
  })

  it('truncates a response that would not fit in 65535 bytes even over TCP', () => {
    const query = asQuery(parseQuery(encodeQuery({ id: 1, name: 'big', type: TYPE.TXT })))
    const big: RR = { name: 'big', type: TYPE.TXT, ttl: 1, data: ['y'.repeat(60_000)] }
    const r = decodeMessage(encodeResponse(query, { rcode: 0, answers: [big, big] }, { maxSize: MAX_MESSAGE }))!
    expect([r.tc, r.answers.length]).toEqual([true, 0])
    expect(decodeMessage(encodeResponse(query, { rcode: 0, answers: [big] }, { maxSize: MAX_MESSAGE }))!.answers).toHaveLength(1)
  })

  it('rejects invalid names and addresses (trusted input only)', () => {
    const query = q()
    expect(() => encodeResponse(query, { rcode: 0, answers: [{ ...A_WEB, data: '10.0.0.256' }] })).toThrow(TypeError)
    expect(() => encodeResponse(query, { rcode: 0, answers: [{ ...A_WEB, name: 'a..b' }] })).toThrow(TypeError)
    expect(() => encodeResponse(query, { rcode: 0, answers: [{ name: WEB, type: TYPE.CNAME, ttl: 1, data: 'ĉ.example' }] })).toThrow(TypeError)
    expect(() => encodeResponse(query, { rcode: 0, answers: [{ name: WEB, type: TYPE.CNAME, ttl: 1, data: 'x'.repeat(64) + '.example' }] })).toThrow(TypeError)
    expect(() => nameToWire('x'.repeat(64))).toThrow(TypeError)
    expect(() => nameToWire(Array.from({ length: 128 }, () => 'a').join('.'))).toThrow(TypeError)
    expect(() => nameToWire('é✓')).toThrow(TypeError)
    expect(Buffer.from(nameToWire('a.b.')).toString('hex')).toBe('01610162' + '00')
    expect(Buffer.from(nameToWire('\\046\\.x.b')).toString('hex')).toBe('032e2e78' + '0162' + '00')
  })
})

describe('hot-path patching', () => {
  it('writeResponse sets the ID, RD/CD, the client spelling and the DO bit', () => {
    const first = asQuery(parseQuery(encodeQuery({ id: 1, name: WEB, type: TYPE.A, edns: {} })))
    const template = encodeResponse(first, { rcode: 0, aa: true, answers: [A_WEB] })
    const next = asQuery(parseQuery(encodeQuery({ id: 0xabcd, name: 'WEB.default.svc.cluster.LOCAL', type: TYPE.A, rd: true, cd: true, edns: { do: true } })))
    const out = Buffer.alloc(MAX_MESSAGE)
    const n = writeResponse(template, next, out)
    const expected = encodeResponse(next, { rcode: 0, aa: true, answers: [A_WEB] })
    expect(out.subarray(0, n)).toEqual(expected)
    expect(copyResponse(template, next)).toEqual(expected)
    const m = decodeMessage(expected)!
    expect([m.id, m.rd, m.cd, m.opt?.do, m.questions[0]!.name]).toEqual([0xabcd, true, true, true, 'WEB.default.svc.cluster.LOCAL'])
    // templates must hold the lowercase name (the cache makes sure): then any spelling comes out right
    writeResponse(template, first, out)
    expect(out.subarray(0, n)).toEqual(template)
  })

  it('patchHeader touches only ID, RD and CD', () => {
    const b = hex('0000 8580 0001 0000 0000 0000')
    patchHeader(b, 0x0102, 0x0010)
    expect(b.toString('hex')).toBe('0102849000010000' + '00000000')
  })
})

describe('parseResponseMeta', () => {
  const query = asQuery(parseQuery(encodeQuery({ id: 77, name: WEB, type: TYPE.A, edns: {} })))
  const soa = (ttl: number, minimum: number): RR => ({ name: 'cluster.local', type: TYPE.SOA, ttl, data: { mname: 'a', rname: 'b', serial: 1, refresh: 1, retry: 1, expire: 1, minimum } })

  it('positive: the minimum answer TTL; matches the question', () => {
    const r = encodeResponse(query, { rcode: 0, answers: [{ ...A_WEB, ttl: 300 }, { ...A_WEB, ttl: 30, data: '10.0.0.2' }], authority: [soa(1, 1)] })
    const m = meta(r)
    expect([m.id, m.rcode, m.tc, m.ancount, m.minTtl, m.negative, m.edns, m.qtype, m.questionEnd]).toEqual([77, 0, false, 2, 30, false, true, TYPE.A, query.questionEnd])
    expect(questionMatches(query, r, m)).toBe(true)
    const other = asQuery(parseQuery(encodeQuery({ id: 77, name: 'WEB.default.svc.cluster.local', type: TYPE.A })))
    expect(questionMatches(other, r, m)).toBe(true)
    expect(questionMatches(asQuery(parseQuery(encodeQuery({ id: 77, name: 'web2.default.svc.cluster.local', type: TYPE.A }))), r, m)).toBe(false)
    expect(questionMatches(asQuery(parseQuery(encodeQuery({ id: 78, name: WEB, type: TYPE.A }))), r, m)).toBe(false)
    expect(questionMatches(asQuery(parseQuery(encodeQuery({ id: 77, name: WEB, type: TYPE.AAAA }))), r, m)).toBe(false)
  })

  it('negative: min(SOA TTL, SOA MINIMUM) per RFC 2308; none without a SOA', () => {
    expect(meta(encodeResponse(query, { rcode: RCODE.NXDOMAIN, authority: [soa(60, 10)] })).minTtl).toBe(10)
    expect(meta(encodeResponse(query, { rcode: 0, authority: [soa(7, 10)] }))).toMatchObject({ minTtl: 7, negative: true })
    expect(meta(encodeResponse(query, { rcode: RCODE.NXDOMAIN }))).toMatchObject({ minTtl: -1, negative: true })
    // NXDOMAIN at the end of a CNAME chain: the smaller of both
    expect(meta(encodeResponse(query, { rcode: RCODE.NXDOMAIN, answers: [{ name: WEB, type: TYPE.CNAME, ttl: 3, data: 'x.example' }], authority: [soa(60, 60)] })).minTtl).toBe(3)
  })

  it('TTLs with the top bit set count as 0; the extended rcode comes from the OPT', () => {
    const r = encodeResponse(query, { rcode: 0, answers: [{ ...A_WEB, ttl: 0x80000000 }] })
    expect(meta(r).minTtl).toBe(0)
    const bv = encodeError(encodeQuery({ id: 1, name: 'a', type: 1, edns: { version: 1 } }), asFailure(parseQuery(encodeQuery({ id: 1, name: 'a', type: 1, edns: { version: 1 } }))))
    expect(meta(bv).rcode).toBe(RCODE.BADVERS)
  })

  it('malformed unless TC explains a cut-off tail', () => {
    const r = encodeResponse(query, { rcode: 0, answers: [A_WEB, { ...A_WEB, data: '10.0.0.2' }] })
    expect(parseResponseMeta(r.subarray(0, r.length - 3))).toEqual({ error: 'malformed' })
    const cut = Buffer.from(r.subarray(0, r.length - 3))
    cut[2]! |= 0x02
    expect(meta(cut)).toMatchObject({ tc: true, minTtl: 5, ancount: 2 })
    expect(parseResponseMeta(encodeQuery({ id: 1, name: 'a', type: 1 }))).toEqual({ error: 'malformed' }) // QR=0
    expect(parseResponseMeta(new Uint8Array(5))).toEqual({ error: 'malformed' })
  })

  it('walks compressed names without following pointers (so pointer loops cannot hang it)', () => {
    // answer owner is a pointer to itself
    const m = hex('0001 8180 0001 0001 0000 0000 0161 00 0001 0001  c013 0001 0001 0000003c 0004 01020304')
    expect(meta(m)).toMatchObject({ minTtl: 60, ancount: 1 })
    expect(skipName(m, 19)).toBe(21)
    expect(decodeMessage(m)).toBeUndefined() // a full decode does follow pointers, and refuses the loop
  })
})

describe('ip helpers', () => {
  it('parses strictly and formats canonically', () => {
    expect(parseIPv4('10.0.0.1')).toEqual(new Uint8Array([10, 0, 0, 1]))
    for (const bad of ['10.0.0', '10.0.0.01', '256.0.0.1', '1.2.3.4.5', ' 1.2.3.4', '1..2.3', '']) expect(parseIPv4(bad)).toBeUndefined()
    expect(formatIPv6(parseIPv6('fd00:0:0:0:0:0:0:10')!)).toBe('fd00::10')
    expect(formatIPv6(parseIPv6('::ffff:10.0.0.1')!)).toBe('::ffff:a00:1')
    expect(formatIPv6(parseIPv6('1:0:0:2:0:0:0:3')!)).toBe('1:0:0:2::3')
    expect(formatIPv6(parseIPv6('::')!)).toBe('::')
    expect(formatIPv6(parseIPv6('1::')!)).toBe('1::')
    expect(formatIPv6(parseIPv6('1:2:3:4:5:6:7:8')!)).toBe('1:2:3:4:5:6:7:8')
    expect(formatIPv6(parseIPv6('1:0:3:4:5:6:7:8')!)).toBe('1:0:3:4:5:6:7:8')
    for (const bad of [':1', '1:', '1:::2', '1::2::3', '12345::', '1:2:3:4:5:6:7:8:9', 'g::', '::1.2.3', '1:2:3:4:5:6:7:1.2.3.4']) expect(parseIPv6(bad)).toBeUndefined()
    expect(reverseName(parseIP('10.96.0.1')!)).toBe('1.0.96.10.in-addr.arpa')
    expect(reverseName(parseIP('2001:db8::1')!)).toBe('1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa')
    expect(dashedIP(parseIP('fd00::1')!)).toBe('fd00--1')
    expect(parseDashedIP('fd00--1')).toEqual(parseIP('fd00::1'))
    expect(parseDashedIP('10-1-2-3')).toEqual(parseIP('10.1.2.3'))
    expect(parseDashedIP('10-1-2')).toBeUndefined()
  })

  it('IPv6 parse/format round trips (property)', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
      expect(parseIPv6(formatIPv6(b))).toEqual(b)
      expect(parseDashedIP(dashedIP(b))).toEqual(b)
    }), { numRuns: 2000 })
    fc.assert(fc.property(fc.ipV6(), (s) => { expect(parseIPv6(s)).toBeDefined() }), { numRuns: 2000 })
    fc.assert(fc.property(fc.ipV4(), (s) => { expect(formatIPv6(parseIPv6('::ffff:' + s)!).startsWith('::ffff:')).toBe(true) }), { numRuns: 500 })
  })
})

// ---- fuzz ---------------------------------------------------------------------------------------

/** xorshift32: fast, deterministic */
function rng (seed: number): () => number {
  let s = seed | 0 || 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return s >>> 0
  }
}

function corpus (): Buffer[] {
  const out: Buffer[] = []
  const names = ['', 'a', WEB, 'Mixed.CASE.Example.COM', '_http._tcp.' + WEB, '1.0.96.10.in-addr.arpa', 'x'.repeat(63) + '.' + 'y'.repeat(63)]
  for (const [i, name] of names.entries()) {
    out.push(encodeQuery({ id: i, name, type: TYPE.A, rd: true }))
    out.push(encodeQuery({ id: i, name, type: TYPE.SRV, edns: { udpSize: 4096, do: true, options: [{ code: 10, data: new Uint8Array(8).fill(i) }] } }))
  }
  // responses, for mutation through parseResponseMeta
  const q = asQuery(parseQuery(encodeQuery({ id: 1, name: '_http._tcp.' + WEB, type: TYPE.SRV, edns: {} })))
  const srv: RR[] = Array.from({ length: 3 }, (_, i) => ({ name: q.qname, type: TYPE.SRV, ttl: 5, data: { priority: 0, weight: 100, port: 80, target: `h${i}.${WEB}` } }))
  out.push(encodeResponse(q, { rcode: 0, aa: true, answers: srv, additional: srv.map((s, i) => ({ name: (s.data as { target: string }).target, type: TYPE.A, ttl: 5, data: `10.0.0.${i}` })) }, { maxSize: MAX_MESSAGE }))
  out.push(encodeResponse(q, { rcode: 3, authority: [{ name: 'cluster.local', type: TYPE.SOA, ttl: 5, data: { mname: 'ns.dns.cluster.local', rname: 'hostmaster.cluster.local', serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5 } }] }))
  out.push(encodeResponse(q, { rcode: 0, answers: [{ name: q.qname, type: TYPE.TXT, ttl: 1, data: ['a', 'bb'] }, { name: q.qname, type: TYPE.CNAME, ttl: 1, data: 'c.' + WEB }] }))
  // hand-made: pointer-heavy and looping messages
  out.push(hex('0001 8180 0001 0001 0000 0000 0161 00 0001 0001  c013 0001 0001 0000003c 0004 01020304'))
  out.push(hex('0001 0000 0001 0000 0000 0000  02 0061 c00d  0001 0001'))
  out.push(hex('0001 0000 0001 0000 0000 0000 01 61 02 6363 c0 0e 0001 0001'))
  return out
}

function mutate (src: Buffer, r: () => number): Buffer {
  const b = Buffer.from(src)
  const kind = r() % 8
  const at = (): number => r() % Math.max(1, b.length)
  switch (kind) {
    case 0: for (let i = 1 + (r() & 3); i > 0; i--) b[at()]! ^= 1 << (r() & 7); return b // bit flips
    case 1: return b.subarray(0, r() % (b.length + 1)) // truncation
    case 2: { b[at()] = r() & 0xff; b[at()] = r() & 0xff; return b } // random bytes
    case 3: { const i = 4 + 2 * (r() % 4); if (i + 1 < b.length) { const v = [0, 1, 2, 0xff, 0xffff, r() & 0xffff][r() % 6]!; b[i] = v >> 8; b[i + 1] = v & 0xff } return b } // counts
    case 4: { const i = at(); const v = [0, 1, 63, 64, 0xbf, 0xc0, 0xff, r() & 0xff][r() % 8]!; b[i] = v; return b } // length bytes
    case 5: { const i = at(); if (i + 1 < b.length) { const t = r() % (b.length + 4); b[i] = 0xc0 | ((t >> 8) & 0x3f); b[i + 1] = t & 0xff } return b } // pointers, incl. self and forward
    case 6: return Buffer.concat([b, Buffer.from(Array.from({ length: r() % 40 }, () => r() & 0xff))]) // trailing junk
    default: { const i = at(); const j = at(); return Buffer.concat([b.subarray(0, Math.min(i, j)), b.subarray(Math.max(i, j))]) } // splice out
  }
}

/** What must hold for any input: no throw; a parsed query is self-consistent. */
function checkQuery (m: Uint8Array, q: Query, deep: boolean): void {
  const r = parseQuery(m, q)
  if (r instanceof Query) {
    if (!(r.questionEnd <= m.length && r.qnameEnd + 4 === r.questionEnd && r.qnameEnd > 12 && r.maxUdp >= 512 && r.maxUdp <= 1232)) throw new Error('inconsistent query')
    if (deep) {
      const name = r.qname
      // the text form maps back to the same (lowercased) wire name
      const again = asQuery(parseQuery(encodeQuery({ id: r.id, name, type: r.qtype, class: r.qclass, edns: r.edns ? { udpSize: r.udpSize } : undefined })))
      if (again.hash !== r.hash || again.qname !== name) throw new Error(`text form does not round trip: ${name}`)
      encodeResponse(r, { rcode: 0, answers: [] })
    }
  } else if (r.error !== 'drop') {
    encodeError(m, r)
  }
}

describe('fuzz', () => {
  it('random bytes (fast-check): parsers never throw', () => {
    const q = new Query()
    fc.assert(fc.property(fc.uint8Array({ maxLength: 700 }), (b) => {
      checkQuery(b, q, true)
      parseResponseMeta(b)
      decodeMessage(b)
    }), { numRuns: 20_000 })
    // random bytes behind a plausible header
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(0, 1, 2, 3, 0xffff), fc.uint8Array({ maxLength: 300 }), (id, flags, count, body) => {
      const h = Buffer.alloc(12)
      h.writeUInt16BE(id, 0); h.writeUInt16BE(flags, 2); h.writeUInt16BE(1, 4); h.writeUInt16BE(count, 6); h.writeUInt16BE(count, 8); h.writeUInt16BE(count, 10)
      const m = Buffer.concat([h, body])
      checkQuery(m, q, true)
      parseResponseMeta(m)
      decodeMessage(m)
    }), { numRuns: 20_000 })
    expect(wireStats.internalErrors).toBe(0)
  })

  it('valid queries built by fast-check parse back to what was encoded', () => {
    const label = fc.stringMatching(/^[a-zA-Z0-9_-]{1,20}$/)
    fc.assert(fc.property(fc.array(label, { maxLength: 6 }), fc.integer({ min: 1, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.boolean(), fc.option(fc.record({ udpSize: fc.integer({ min: 0, max: 0xffff }), do: fc.boolean() }), { nil: undefined }), (labels, type, id, rd, edns) => {
      const name = labels.join('.')
      const m = encodeQuery({ id, name, type, rd, edns })
      const r = parseQuery(m)
      if (type === TYPE.OPT || (type >= TYPE.IXFR && type <= TYPE.MAILA)) { expect(r instanceof Query).toBe(false); return }
      const q = asQuery(r)
      expect([q.id, q.qname, q.qtype, q.rd, q.edns, q.dnssecOk]).toEqual([id, name.toLowerCase(), type, rd, edns != null, edns?.do ?? false])
      expect(q.mixedCase).toBe(name !== name.toLowerCase())
    }), { numRuns: 10_000 })
  })

  // How fast the parsers are on hostile input is measured by test/bench/dns-hotpath.ts.
  it('over a million mutated messages through parseQuery and parseResponseMeta: no throw, no hang', () => {
    const seeds = corpus()
    const r = rng(0x5eed)
    const q = new Query()
    const N = 1_100_000
    let parsed = 0
    let metas = 0
    for (let i = 0; i < N; i++) {
      let m = mutate(seeds[i % seeds.length]!, r)
      if ((i & 7) === 0) m = mutate(m, r) // some get two mutations
      checkQuery(m, q, (i & 63) === 0)
      if (parseQuery(m, q) instanceof Query) parsed++
      if (!('error' in parseResponseMeta(m))) metas++
      if ((i & 15) === 0) decodeMessage(m)
    }
    // sanity: the mutations are not all fatal
    expect(parsed).toBeGreaterThan(N / 20)
    expect(metas).toBeGreaterThan(N / 20)
    expect(wireStats.internalErrors).toBe(0)
  })
})
