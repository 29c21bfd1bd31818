// The one IPv6 text<->bytes conversion every codec uses (SOCKS5, proxy, rendezvous endpoints).
import { isIPv6 } from 'node:net'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { bytesToIpv6, ipv6ToBytes } from '../../shared/wire/addr.ts'

/** node's own canonical (compressed) spelling of an IPv6 literal */
const canonical = (ip: string): string => new URL(`http://[${ip}]/`).hostname.slice(1, -1)

describe('ipv6ToBytes / bytesToIpv6', () => {
  it('round-trips any 16 bytes, through the long and the compressed spelling', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
      const text = bytesToIpv6(b)
      expect(isIPv6(text)).toBe(true)
      expect(ipv6ToBytes(text)).toEqual(b)
      expect(ipv6ToBytes(canonical(text))).toEqual(b)
    }), { numRuns: 5000 })
  })

  it('reads a dotted IPv4 tail and drops a zone', () => {
    expect(Array.from(ipv6ToBytes('::ffff:1.2.3.4'))).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4])
    expect(Array.from(ipv6ToBytes('fe80::1%eth0'))).toEqual([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    expect(Array.from(ipv6ToBytes('::'))).toEqual(new Array(16).fill(0))
    expect(bytesToIpv6(ipv6ToBytes('2001:db8::8:800:200c:417a'))).toBe('2001:db8:0:0:8:800:200c:417a')
  })
})
