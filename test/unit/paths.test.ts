// Unit tests for tunnel path ranking (agent/tunnel/paths.ts).
import { describe, expect, it } from 'vitest'
import { PATH_PREFERENCE, classifyLibp2pConnection, isDirect, pathRank, type PathKind } from '../../agent/tunnel/paths.ts'

const ALL: PathKind[] = ['direct-tcp', 'direct-udp', 'relay-udp', 'relay-tcp']

describe('pathRank', () => {
  it('ranks direct-tcp < direct-udp < relay-udp < relay-tcp (lower is better)', () => {
    expect(ALL.map(pathRank)).toEqual([0, 1, 2, 3])
    expect(PATH_PREFERENCE).toEqual(ALL)
  })

  it('sorting by rank yields the preference order from any permutation', () => {
    const shuffled: PathKind[] = ['relay-tcp', 'direct-udp', 'relay-udp', 'direct-tcp']
    expect([...shuffled].sort((a, b) => pathRank(a) - pathRank(b))).toEqual(ALL)
  })

  it('every direct path outranks every relay path', () => {
    for (const d of ALL.filter(isDirect)) {
      for (const r of ALL.filter((p) => !isDirect(p))) expect(pathRank(d)).toBeLessThan(pathRank(r))
    }
  })
})

describe('isDirect', () => {
  it('true for direct paths, false for relayed ones', () => {
    expect(isDirect('direct-tcp')).toBe(true)
    expect(isDirect('direct-udp')).toBe(true)
    expect(isDirect('relay-udp')).toBe(false)
    expect(isDirect('relay-tcp')).toBe(false)
  })
})

describe('classifyLibp2pConnection', () => {
  const conn = (addr: string): Parameters<typeof classifyLibp2pConnection>[0] =>
    ({ remoteAddr: { toString: () => addr } }) as unknown as Parameters<typeof classifyLibp2pConnection>[0]

  it('circuit addresses are relay-tcp, plain TCP is direct-tcp, anything else is unknown', () => {
    expect(classifyLibp2pConnection(conn('/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWA/p2p-circuit/p2p/12D3KooWB'))).toBe('relay-tcp')
    expect(classifyLibp2pConnection(conn('/ip4/10.0.0.2/tcp/4004/p2p/12D3KooWB'))).toBe('direct-tcp')
    expect(classifyLibp2pConnection(conn('/ip6/::1/tcp/4004'))).toBe('direct-tcp')
    expect(classifyLibp2pConnection(conn('/ip4/10.0.0.2/udp/4003'))).toBeUndefined()
  })
})
