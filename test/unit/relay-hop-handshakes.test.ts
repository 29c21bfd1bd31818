// The HOP handshake gate (server/hop-handshakes.ts): concurrent handshakes per connection and
// relay-wide, each refusal counted by reason; a released slot is free again, once.
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { hopHandshakeGate } from '../../server/hop-handshakes.ts'

function refusals (): { refuse: (reason: string) => void, counts: Map<string, number> } {
  const counts = new Map<string, number>()
  return { counts, refuse: (reason) => { counts.set(reason, (counts.get(reason) ?? 0) + 1) } }
}

describe('hopHandshakeGate', () => {
  it('admits up to the per-connection cap on one connection, then refuses and counts', () => {
    const r = refusals()
    const gate = hopHandshakeGate({ perConnection: 3, total: 100 }, r.refuse)
    const admitted = [1, 2, 3].map(() => gate.enter('c1'))
    expect(admitted.every((x) => typeof x === 'function')).toBe(true)
    expect(gate.enter('c1')).toBeUndefined()
    expect(gate.enter('c1')).toBeUndefined()
    expect(r.counts.get('circuit-hop-handshakes-per-connection')).toBe(2)
    // another connection is not affected
    expect(gate.enter('c2')).toBeTypeOf('function')
    expect(gate.inProgress).toBe(4)
    expect(gate.connections).toBe(2)
  })

  it('refuses past the relay-wide cap whichever connection asks', () => {
    const r = refusals()
    const gate = hopHandshakeGate({ perConnection: 2, total: 3 }, r.refuse)
    expect(gate.enter('a')).toBeTypeOf('function')
    expect(gate.enter('b')).toBeTypeOf('function')
    const release = gate.enter('c')!
    expect(gate.enter('d')).toBeUndefined()
    expect(r.counts.get('circuit-hop-handshakes-total')).toBe(1)
    release()
    expect(gate.enter('d')).toBeTypeOf('function')
    expect(gate.inProgress).toBe(3)
  })

  it('a release frees one slot once; a connection with none left is forgotten', () => {
    const gate = hopHandshakeGate({ perConnection: 1, total: 10 }, () => {})
    const release = gate.enter('c1')!
    expect(gate.enter('c1')).toBeUndefined()
    release()
    release()
    expect(gate.inProgress).toBe(0)
    expect(gate.connections).toBe(0)
    const again = gate.enter('c1')!
    expect(gate.enter('c1')).toBeUndefined()
    again()
    expect(gate.inProgress).toBe(0)
  })

  it('any sequence of enters and releases keeps the counts within the caps and consistent', () => {
    fc.assert(fc.property(
      fc.array(fc.oneof(fc.record({ enter: fc.integer({ min: 0, max: 4 }) }), fc.record({ release: fc.nat() })), { maxLength: 200 }),
      (ops) => {
        const r = refusals()
        const gate = hopHandshakeGate({ perConnection: 3, total: 7 }, r.refuse)
        const held: Array<{ conn: string, release: () => void }> = []
        let refused = 0
        for (const op of ops) {
          if ('enter' in op) {
            const conn = `c${op.enter}`
            const release = gate.enter(conn)
            if (release == null) refused++
            else held.push({ conn, release })
          } else if (held.length > 0) {
            const h = held.splice(op.release % held.length, 1)[0]!
            h.release()
            h.release()
          }
          expect(gate.inProgress).toBe(held.length)
          expect(gate.inProgress).toBeLessThanOrEqual(7)
          expect(gate.connections).toBe(new Set(held.map((h) => h.conn)).size)
          for (const c of new Set(held.map((h) => h.conn))) expect(held.filter((h) => h.conn === c).length).toBeLessThanOrEqual(3)
        }
        const counted = (r.counts.get('circuit-hop-handshakes-per-connection') ?? 0) + (r.counts.get('circuit-hop-handshakes-total') ?? 0)
        expect(counted).toBe(refused)
      }), { numRuns: 200 })
  })
})
