// Unit tests for the ClusterIP proxy's tunnel protocol (agent/proxy/wire.ts): the request that
// opens a proxy stream and the length-framed datagrams of UDP flows. Also the HTTP header
// reader the TCP listener uses for header-based consistent hashing (agent/proxy/listener.ts).
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  DatagramDecoder, MAX_DATAGRAM, MAX_REQUEST_BYTES, decodeRequest, encodeDatagram, encodeRequest, type ProxyRequest
} from '../../agent/proxy/wire.ts'
import { parseHttpHeaders } from '../../agent/proxy/listener.ts'

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b)
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const concat = (parts: readonly Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(parts))

/** The canonical text of an IPv6 address (WHATWG URL host serialisation), independent of wire.ts. */
const canonicalIPv6 = (ip: string): string => new URL(`http://[${ip}]/`).hostname

describe('encodeRequest', () => {
  it('encodes an IPv4 TCP request in 9 bytes: version, protocol, family, address, port big-endian', () => {
    expect(encodeRequest({ protocol: 'TCP', ip: '10.96.0.10', port: 8443 }))
      .toEqual(bytes(1, 6, 4, 10, 96, 0, 10, 0x20, 0xfb))
  })

  it('encodes an IPv4 UDP request with protocol byte 17', () => {
    expect(encodeRequest({ protocol: 'UDP', ip: '192.168.1.254', port: 53 }))
      .toEqual(bytes(1, 17, 4, 192, 168, 1, 254, 0, 53))
  })

  it('encodes the extreme ports 1 and 65535', () => {
    expect(encodeRequest({ protocol: 'TCP', ip: '0.0.0.0', port: 1 })).toEqual(bytes(1, 6, 4, 0, 0, 0, 0, 0, 1))
    expect(encodeRequest({ protocol: 'TCP', ip: '255.255.255.255', port: 65535 })).toEqual(bytes(1, 6, 4, 255, 255, 255, 255, 0xff, 0xff))
  })

  it('encodes an IPv6 request with a :: compressed address in 21 bytes', () => {
    const encoded = encodeRequest({ protocol: 'TCP', ip: 'fd00:10:96::a', port: 443 })
    expect(encoded).toEqual(bytes(
      1, 6, 6,
      0xfd, 0x00, 0x00, 0x10, 0x00, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x0a,
      0x01, 0xbb
    ))
    expect(encoded.length).toBe(MAX_REQUEST_BYTES)
  })

  it('encodes an IPv4-mapped IPv6 address (dotted tail)', () => {
    expect(encodeRequest({ protocol: 'UDP', ip: '::ffff:10.1.2.3', port: 53 })).toEqual(bytes(
      1, 17, 6,
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3,
      0, 53
    ))
  })

  it('encodes the all-zero and trailing-:: IPv6 forms', () => {
    expect(encodeRequest({ protocol: 'TCP', ip: '::', port: 80 }).subarray(3, 19)).toEqual(new Uint8Array(16))
    expect(encodeRequest({ protocol: 'TCP', ip: 'fe80::', port: 80 }).subarray(3, 19)).toEqual(bytes(0xfe, 0x80, ...new Array<number>(14).fill(0)))
    expect(encodeRequest({ protocol: 'TCP', ip: '::1', port: 80 }).subarray(3, 19)).toEqual(bytes(...new Array<number>(15).fill(0), 1))
  })

  it.each(['10.0.0.256', '10.0.0', 'example.com', '', 'fd00:::1', '1.2.3.4:80'])('rejects the address %j', (ip) => {
    expect(() => encodeRequest({ protocol: 'TCP', ip, port: 80 })).toThrow(/bad address/)
  })

  it.each([0, 65536, 1.5, -1, Number.NaN])('rejects the port %d', (port) => {
    expect(() => encodeRequest({ protocol: 'TCP', ip: '10.0.0.1', port })).toThrow(/bad port/)
  })
})

describe('decodeRequest', () => {
  it('decodes an IPv4 request and reports its length', () => {
    expect(decodeRequest(bytes(1, 6, 4, 10, 96, 0, 10, 0x20, 0xfb)))
      .toEqual({ request: { protocol: 'TCP', ip: '10.96.0.10', port: 8443 }, length: 9 })
    expect(decodeRequest(bytes(1, 17, 4, 192, 168, 1, 254, 0, 53)))
      .toEqual({ request: { protocol: 'UDP', ip: '192.168.1.254', port: 53 }, length: 9 })
  })

  it('decodes an IPv6 request to an equivalent address', () => {
    const decoded = decodeRequest(encodeRequest({ protocol: 'TCP', ip: 'fd00:10:96::a', port: 443 }))
    if (typeof decoded === 'string') throw new Error(decoded)
    expect(decoded.length).toBe(21)
    expect(decoded.request.protocol).toBe('TCP')
    expect(decoded.request.port).toBe(443)
    expect(canonicalIPv6(decoded.request.ip)).toBe('[fd00:10:96::a]')
  })

  it('leaves bytes after the request alone (the stream data that follows)', () => {
    const request = encodeRequest({ protocol: 'TCP', ip: '10.0.0.1', port: 80 })
    const decoded = decodeRequest(concat([request, bytes(0x47, 0x45, 0x54)]))
    expect(decoded).toEqual({ request: { protocol: 'TCP', ip: '10.0.0.1', port: 80 }, length: 9 })
  })

  it('asks for more bytes on every strict prefix of a valid request', () => {
    for (const r of [{ protocol: 'TCP', ip: '10.96.0.10', port: 80 }, { protocol: 'UDP', ip: 'fd00::53', port: 53 }] satisfies ProxyRequest[]) {
      const full = encodeRequest(r)
      for (let n = 0; n < full.length; n++) expect(decodeRequest(full.subarray(0, n)), `prefix of ${n} bytes`).toBe('short')
    }
  })

  it('reports a wrong version, unknown protocol, unknown family and port 0', () => {
    expect(decodeRequest(bytes(2, 6, 4, 10, 0, 0, 1, 0, 80))).toBe('unsupported version 2')
    expect(decodeRequest(bytes(0, 6, 4, 10, 0, 0, 1, 0, 80))).toBe('unsupported version 0')
    expect(decodeRequest(bytes(1, 1, 4, 10, 0, 0, 1, 0, 80))).toBe('unknown protocol 1')
    expect(decodeRequest(bytes(1, 132, 4, 10, 0, 0, 1, 0, 80))).toBe('unknown protocol 132')
    expect(decodeRequest(bytes(1, 6, 5, 10, 0, 0, 1, 0, 80))).toBe('unknown address family 5')
    expect(decodeRequest(bytes(1, 6, 41, 10, 0, 0, 1, 0, 80))).toBe('unknown address family 41')
    expect(decodeRequest(bytes(1, 6, 4, 10, 0, 0, 1, 0, 0))).toBe('port 0')
    expect(decodeRequest(bytes(1, 17, 6, ...new Array<number>(16).fill(0), 0, 0))).toBe('port 0')
  })

  it('reports a bad header as soon as the 3 header bytes are in, without waiting for the address', () => {
    expect(decodeRequest(bytes(9, 6, 4))).toBe('unsupported version 9')
    expect(decodeRequest(bytes(1, 7, 4))).toBe('unknown protocol 7')
    expect(decodeRequest(bytes(1, 6, 0))).toBe('unknown address family 0')
  })

  const ipv4Request = fc.record({ protocol: fc.constantFrom('TCP' as const, 'UDP' as const), ip: fc.ipV4(), port: fc.integer({ min: 1, max: 65535 }) })
  const ipv6Request = fc.record({ protocol: fc.constantFrom('TCP' as const, 'UDP' as const), ip: fc.ipV6(), port: fc.integer({ min: 1, max: 65535 }) })

  it('round-trips any IPv4 request exactly', () => {
    fc.assert(fc.property(ipv4Request, (r) => {
      const encoded = encodeRequest(r)
      expect(encoded.length).toBe(9)
      expect(decodeRequest(encoded)).toEqual({ request: r, length: 9 })
    }), { numRuns: 500 })
  })

  it('round-trips any IPv6 request to the same 16 address bytes', () => {
    fc.assert(fc.property(ipv6Request, (r) => {
      const encoded = encodeRequest(r)
      expect(encoded.length).toBe(21)
      const decoded = decodeRequest(encoded)
      if (typeof decoded === 'string') throw new Error(`${r.ip}: ${decoded}`)
      expect(decoded.length).toBe(21)
      expect(decoded.request.protocol).toBe(r.protocol)
      expect(decoded.request.port).toBe(r.port)
      expect(canonicalIPv6(decoded.request.ip)).toBe(canonicalIPv6(r.ip))
      expect(hex(encodeRequest(decoded.request))).toBe(hex(encoded))
    }), { numRuns: 500 })
  })

  it('asks for more bytes on every strict prefix of any valid request', () => {
    fc.assert(fc.property(fc.oneof(ipv4Request, ipv6Request), (r) => {
      const full = encodeRequest(r)
      for (let n = 0; n < full.length; n++) expect(decodeRequest(full.subarray(0, n))).toBe('short')
    }), { numRuns: 200 })
  })

  it('never throws on garbage: short, an error, or a request that re-encodes to the bytes it consumed', () => {
    // half plain noise, half a plausible header followed by noise, so the valid path is exercised too
    const plausible = fc.tuple(fc.constantFrom(6, 17), fc.constantFrom(4, 6), fc.uint8Array({ maxLength: 30 }))
      .map(([protocol, family, rest]) => concat([bytes(1, protocol, family), rest]))
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 40 }), plausible), (buf) => {
      const decoded = decodeRequest(buf)
      if (typeof decoded === 'string') {
        expect(decoded.length).toBeGreaterThan(0)
        if (decoded === 'short') expect(buf.length).toBeLessThan(MAX_REQUEST_BYTES)
        return
      }
      expect(decoded.length === 9 || decoded.length === 21).toBe(true)
      expect(decoded.length).toBeLessThanOrEqual(buf.length)
      expect(hex(encodeRequest(decoded.request))).toBe(hex(buf.subarray(0, decoded.length)))
    }), { numRuns: 2000 })
  })
})

describe('encodeDatagram', () => {
  it('prefixes the payload with its length as a big-endian u16', () => {
    expect(encodeDatagram(bytes(7, 8, 9))).toEqual(bytes(0, 3, 7, 8, 9))
    expect(encodeDatagram(new Uint8Array(0))).toEqual(bytes(0, 0))
    const f = encodeDatagram(new Uint8Array(300).fill(0xaa))
    expect([f.length, f[0], f[1], f[2], f[301]]).toEqual([302, 1, 44, 0xaa, 0xaa])
  })

  it('accepts 65535 bytes and rejects anything longer', () => {
    const max = encodeDatagram(new Uint8Array(MAX_DATAGRAM))
    expect([max.length, max[0], max[1]]).toEqual([65537, 0xff, 0xff])
    expect(() => encodeDatagram(new Uint8Array(MAX_DATAGRAM + 1))).toThrow(/65536 bytes exceeds 65535/)
  })
})

describe('DatagramDecoder', () => {
  it('returns nothing and buffers an incomplete frame until the next push completes it', () => {
    const d = new DatagramDecoder()
    const frame = encodeDatagram(bytes(1, 2, 3, 4))
    expect(d.push(frame.subarray(0, 1))).toEqual([])
    expect(d.buffered).toBe(1)
    expect(d.push(frame.subarray(1, 5))).toEqual([])
    expect(d.buffered).toBe(5)
    expect(d.push(frame.subarray(5))).toEqual([bytes(1, 2, 3, 4)])
    expect(d.buffered).toBe(0)
  })

  it('returns the complete frames of a chunk and keeps the tail for later', () => {
    const d = new DatagramDecoder()
    const stream = concat([encodeDatagram(bytes(1)), encodeDatagram(bytes()), encodeDatagram(bytes(2, 3)), encodeDatagram(bytes(4, 5, 6))])
    // frames: [0 1 | 1] [0 0] [0 2 | 2 3] [0 3 | 4 5 6]; cut inside the last one
    expect(d.push(stream.subarray(0, 11)).map(hex)).toEqual(['01', '', '0203'])
    expect(d.buffered).toBe(2)
    expect(d.push(stream.subarray(11)).map(hex)).toEqual(['040506'])
    expect(d.buffered).toBe(0)
  })

  it('ignores empty pushes, before and in the middle of a frame', () => {
    const d = new DatagramDecoder()
    expect(d.push(new Uint8Array(0))).toEqual([])
    expect(d.push(bytes(0, 2, 9))).toEqual([])
    expect(d.push(new Uint8Array(0))).toEqual([])
    expect(d.buffered).toBe(3)
    expect(d.push(bytes(8)).map(hex)).toEqual(['0908'])
    expect(d.buffered).toBe(0)
  })

  it('carries a 65535-byte datagram between empty ones through uneven chunks', () => {
    const big = Uint8Array.from({ length: MAX_DATAGRAM }, (_, i) => (i * 31 + 7) & 0xff)
    const stream = concat([encodeDatagram(bytes()), encodeDatagram(big), encodeDatagram(bytes()), encodeDatagram(bytes(42))])
    const d = new DatagramDecoder()
    const out: Uint8Array[] = []
    const cuts = [1, 2, 3, 1000, 40_000, 65_538, 65_539, 65_540, 65_541, stream.length]
    let from = 0
    for (const to of cuts) { out.push(...d.push(stream.subarray(from, to))); from = to }
    expect(out.map(hex)).toEqual([hex(bytes()), hex(big), hex(bytes()), hex(bytes(42))])
    expect(d.buffered).toBe(0)
  })

  it('reassembles any datagrams exactly, in order, however the stream is cut', () => {
    const datagrams = fc.array(fc.oneof(
      { arbitrary: fc.uint8Array({ maxLength: 2000 }), weight: 4 },
      { arbitrary: fc.constant(new Uint8Array(0)), weight: 1 }
    ), { maxLength: 12 })
    // chunk sizes are applied in turn until the stream is used up; small ones (and 1-byte ones) are frequent
    const chunkSizes = fc.array(fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 4 }), fc.integer({ min: 1, max: 5000 })), { minLength: 1, maxLength: 30 })
      .filter((sizes) => sizes.some((s) => s > 0))
    fc.assert(fc.property(datagrams, chunkSizes, (input, sizes) => {
      const stream = concat(input.map(encodeDatagram))
      const d = new DatagramDecoder()
      const out: Uint8Array[] = []
      for (let from = 0, i = 0; from < stream.length; i++) {
        const to = Math.min(stream.length, from + sizes[i % sizes.length]!)
        out.push(...d.push(stream.subarray(from, to)))
        from = to
      }
      expect(out.map(hex)).toEqual(input.map(hex))
      expect(d.buffered).toBe(0)
    }), { numRuns: 300 })
  })

  it('reassembles datagrams pushed one byte at a time', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }), (input) => {
      const stream = concat(input.map(encodeDatagram))
      const d = new DatagramDecoder()
      const out: Uint8Array[] = []
      for (let i = 0; i < stream.length; i++) {
        out.push(...d.push(stream.subarray(i, i + 1)))
        expect(d.buffered).toBeLessThan(2 + 300)
      }
      expect(out.map(hex)).toEqual(input.map(hex))
      expect(d.buffered).toBe(0)
    }), { numRuns: 100 })
  })
})

describe('parseHttpHeaders', () => {
  const head = (text: string): Uint8Array => Buffer.from(text, 'latin1')

  it('reads the header fields of a request head, with lower-case names and trimmed values', () => {
    const h = parseHttpHeaders(head('GET /cart HTTP/1.1\r\nHost: shop.default.svc\r\nX-User-ID:  alice  \r\nCONTENT-LENGTH:0\r\n\r\n'))
    expect([...h]).toEqual([['host', 'shop.default.svc'], ['x-user-id', 'alice'], ['content-length', '0']])
  })

  it('does not treat the request line as a header, even with a colon in it', () => {
    const h = parseHttpHeaders(head('GET http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n'))
    expect([...h]).toEqual([['host', 'a']])
  })

  it('keeps the first value of a repeated header, whatever the case of its name', () => {
    const h = parseHttpHeaders(head('GET / HTTP/1.1\r\nX-User: alice\r\nx-user: bob\r\nX-USER: carol\r\n\r\n'))
    expect(h.get('x-user')).toBe('alice')
    expect(h.size).toBe(1)
  })

  it('stops at the blank line: the body is not read as headers', () => {
    const h = parseHttpHeaders(head('POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nX-User: evil\r\n\r\n'))
    expect([...h]).toEqual([['host', 'a'], ['content-length', '12']])
  })

  it('reads a head cut before the blank line', () => {
    const h = parseHttpHeaders(head('GET / HTTP/1.1\r\nHost: a\r\nX-User: alice'))
    expect([...h]).toEqual([['host', 'a'], ['x-user', 'alice']])
  })

  it('keeps colons inside values', () => {
    expect(parseHttpHeaders(head('GET / HTTP/1.1\r\nHost: a:8080\r\nX-Time: 12:30:00\r\n\r\n')).get('x-time')).toBe('12:30:00')
  })

  it('ignores lines without a name or without a colon', () => {
    const h = parseHttpHeaders(head('GET / HTTP/1.1\r\n: no name\r\nno colon at all\r\n\r\nHost: late\r\n'))
    expect(h.size).toBe(0)
    const g = parseHttpHeaders(head('GET / HTTP/1.1\r\nbroken\r\n:x\r\nX-User: bob\r\n\r\n'))
    expect([...g]).toEqual([['x-user', 'bob']])
  })

  it('gives an empty map for a request line alone or an empty head', () => {
    expect(parseHttpHeaders(head('GET / HTTP/1.1\r\n\r\n')).size).toBe(0)
    expect(parseHttpHeaders(head('GET / HTTP/1.1')).size).toBe(0)
    expect(parseHttpHeaders(new Uint8Array(0)).size).toBe(0)
  })

  it('reads bytes as latin1, so any byte value survives', () => {
    expect(parseHttpHeaders(Uint8Array.from([...head('GET / HTTP/1.1\r\nX-B: '), 0xe9, 0xff, ...head('\r\n\r\n')])).get('x-b')).toBe('\u00e9\u00ff')
  })

  it('never throws on arbitrary bytes and only returns lower-case, trimmed names', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (buf) => {
      for (const [name, value] of parseHttpHeaders(buf)) {
        expect(name).toBe(name.toLowerCase().trim())
        expect(value).toBe(value.trim())
        expect(name.includes('\r\n') || value.includes('\r\n')).toBe(false)
      }
    }), { numRuns: 500 })
  })
})
