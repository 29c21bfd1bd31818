// Property tests for the home-relay ranking (agent/tunnel/home-relay.ts).
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { homeRelay, rankRelays } from '../../agent/tunnel/home-relay.ts'

const peerIdArb = fc.string({ minLength: 1, maxLength: 60 })
const relaysArb = fc.uniqueArray(peerIdArb, { minLength: 1, maxLength: 8 }).map((ids) => ids.map((peerId) => ({ peerId })))
const agents = (n: number): string[] => Array.from({ length: n }, (_, i) => `12D3KooWagent${i}`)
const relayList = (n: number): Array<{ peerId: string }> => Array.from({ length: n }, (_, i) => ({ peerId: `12D3KooWrelay${i}` }))

describe('rankRelays', () => {
  it('is deterministic and independent of the input order', () => {
    fc.assert(fc.property(peerIdArb, relaysArb, fc.integer(), (agent, relays, seed) => {
      const shuffled = [...relays].sort((a, b) => ((a.peerId.length * 31 + seed) % 7) - ((b.peerId.length * 31 + seed) % 7))
      expect(rankRelays(agent, relays)).toEqual(rankRelays(agent, relays))
      expect(rankRelays(agent, shuffled).map((r) => r.peerId)).toEqual(rankRelays(agent, relays).map((r) => r.peerId))
    }))
  })

  it('returns a permutation of its input and does not change it', () => {
    fc.assert(fc.property(peerIdArb, relaysArb, (agent, relays) => {
      const before = [...relays]
      const ranked = rankRelays(agent, relays)
      expect(relays).toEqual(before)
      expect(ranked).toHaveLength(relays.length)
      expect(new Set(ranked)).toEqual(new Set(relays))
      expect(homeRelay(agent, relays)).toBe(ranked[0])
    }))
  })

  it('adding a relay moves only the agents whose new home is the added relay', () => {
    fc.assert(fc.property(relaysArb, peerIdArb, fc.array(peerIdArb, { minLength: 1, maxLength: 30 }), (relays, added, agentIds) => {
      fc.pre(!relays.some((r) => r.peerId === added))
      const grown = [...relays, { peerId: added }]
      for (const a of agentIds) {
        const before = homeRelay(a, relays)!.peerId
        const after = homeRelay(a, grown)!.peerId
        if (after !== before) expect(after).toBe(added)
      }
    }))
  })

  it('removing a relay moves only its own agents, each to its second choice', () => {
    fc.assert(fc.property(relaysArb, fc.array(peerIdArb, { minLength: 1, maxLength: 30 }), fc.nat(), (relays, agentIds, pick) => {
      fc.pre(relays.length >= 2)
      const removed = relays[pick % relays.length]!
      const shrunk = relays.filter((r) => r !== removed)
      for (const a of agentIds) {
        const ranked = rankRelays(a, relays)
        const after = homeRelay(a, shrunk)!
        if (ranked[0] === removed) expect(after).toBe(ranked[1])
        else expect(after).toBe(ranked[0])
      }
    }))
  })

  it('spreads 3,000 agents roughly evenly over 3 relays, and a 4th takes about a quarter', () => {
    const as = agents(3000)
    const three = relayList(3)
    const counts = new Map<string, number>()
    for (const a of as) { const h = homeRelay(a, three)!.peerId; counts.set(h, (counts.get(h) ?? 0) + 1) }
    expect(counts.size).toBe(3)
    // 1,000 expected each; a binomial sd is ~26, so 850..1,150 is > 5 sd.
    for (const c of counts.values()) {
      expect(c).toBeGreaterThan(850)
      expect(c).toBeLessThan(1150)
    }
    const four = relayList(4)
    const moved = as.filter((a) => homeRelay(a, three)!.peerId !== homeRelay(a, four)!.peerId).length
    // 750 expected (1/(R+1)); sd ~24.
    expect(moved).toBeGreaterThan(620)
    expect(moved).toBeLessThan(880)
  })

  it('returns nothing for no relays and the one relay for one', () => {
    expect(rankRelays('a', [])).toEqual([])
    expect(homeRelay('a', [])).toBeUndefined()
    expect(homeRelay('a', [{ peerId: 'r' }])).toEqual({ peerId: 'r' })
  })
})
