// Unit tests for the registration PSK MAC (shared/wire/auth.ts).
import { createHmac } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { MAC_BYTES, macMatches, pskMac } from '../../shared/wire/auth.ts'

const te = new TextEncoder()
const PSK = te.encode('cluster secret 0123456789abcdef')
const OTHER = te.encode('cluster secret 0123456789abcdeF')
const BODY = te.encode('EM\x01\x01 register body bytes')

describe('pskMac', () => {
  it('is empty without a PSK', () => {
    const mac = pskMac(undefined, BODY)
    expect(mac).toBeInstanceOf(Uint8Array)
    expect(mac.byteLength).toBe(0)
  })

  it('is the first 16 bytes of HMAC-SHA256(psk, body)', () => {
    const mac = pskMac(PSK, BODY)
    expect(MAC_BYTES).toBe(16)
    expect(mac.byteLength).toBe(16)
    const want = createHmac('sha256', PSK).update(BODY).digest().subarray(0, 16)
    expect(Buffer.from(mac).toString('hex')).toBe(want.toString('hex'))
  })

  it('is deterministic and depends on both the key and the body', () => {
    const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
    expect(hex(pskMac(PSK, BODY))).toBe(hex(pskMac(PSK, BODY.slice())))
    expect(hex(pskMac(PSK, BODY))).not.toBe(hex(pskMac(OTHER, BODY)))
    const body2 = BODY.slice(); body2[5] = body2[5]! ^ 1
    expect(hex(pskMac(PSK, BODY))).not.toBe(hex(pskMac(PSK, body2)))
  })
})

describe('macMatches', () => {
  const mac = pskMac(PSK, BODY)

  it('true for the right PSK', () => {
    expect(macMatches(PSK, BODY, mac)).toBe(true)
    expect(macMatches(PSK.slice(), BODY, Uint8Array.from(mac))).toBe(true)
  })

  it('false for a different PSK', () => {
    expect(macMatches(OTHER, BODY, mac)).toBe(false)
    expect(macMatches(PSK, BODY, pskMac(OTHER, BODY))).toBe(false)
  })

  it('false for any single flipped bit in the MAC', () => {
    for (let i = 0; i < mac.byteLength * 8; i++) {
      const bad = mac.slice(); bad[i >> 3] = bad[i >> 3]! ^ (1 << (i & 7))
      expect(macMatches(PSK, BODY, bad)).toBe(false)
    }
  })

  it('false for a flipped bit in the body', () => {
    const body = BODY.slice(); body[0] = body[0]! ^ 0x80
    expect(macMatches(PSK, body, mac)).toBe(false)
  })

  it('false (no throw) for truncated, extended and empty MACs', () => {
    expect(macMatches(PSK, BODY, mac.subarray(0, 15))).toBe(false)
    expect(macMatches(PSK, BODY, mac.subarray(0, 1))).toBe(false)
    expect(macMatches(PSK, BODY, new Uint8Array(0))).toBe(false)
    const longer = new Uint8Array(17); longer.set(mac)
    expect(macMatches(PSK, BODY, longer)).toBe(false)
    // the full 32-byte HMAC is not accepted either
    expect(macMatches(PSK, BODY, createHmac('sha256', PSK).update(BODY).digest())).toBe(false)
  })

  it('true whatever the MAC when no PSK is configured', () => {
    expect(macMatches(undefined, BODY, new Uint8Array(0))).toBe(true)
    expect(macMatches(undefined, BODY, mac)).toBe(true)
    expect(macMatches(undefined, BODY, new Uint8Array(3))).toBe(true)
  })

  it('property: only the exact MAC of (psk, body) matches', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ maxLength: 20 }), (psk, body, junk) => {
      const good = pskMac(psk, body)
      expect(good.byteLength).toBe(16)
      expect(macMatches(psk, body, good)).toBe(true)
      const same = junk.byteLength === 16 && junk.every((b, i) => b === good[i])
      expect(macMatches(psk, body, junk)).toBe(same)
    }), { numRuns: 500 })
  })
})
