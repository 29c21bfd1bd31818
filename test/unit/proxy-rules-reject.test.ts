// Unit tests for the proxy's filter table (agent/proxy/reject-rules.ts) and the sync payload that
// joins it to the nat table (agent/proxy/rules.ts buildSyncRules): service ports without any
// target are refused with REJECT, in one chain, incrementally, in the same payload that moves
// their DNAT. Pure text in, text out; iptables-restore is simulated on a model of both tables.
import { describe, expect, it } from 'vitest'
import {
  buildRejectRules, buildRules, buildSyncRules, cleanupRules, filterHookFixRules, filterJumpRules, jumpFixRules,
  needsJumpFix, parseChains, rejectChain, type ProxyServicePort, type SyncRuleState
} from '../../agent/proxy/rules.ts'

const P = 'EDGEMESH'
const OPTS = { chainPrefix: P }
const REJECT = 'EDGEMESH-REJECT'

const WEB: ProxyServicePort = { key: 'default/web', clusterIP: '10.96.0.10', port: 80, protocol: 'TCP', balance: 'round-robin', direct: ['10.244.1.2:8080'], agentSlots: 0 }
const EMPTY: ProxyServicePort = { key: 'default/empty', clusterIP: '10.96.0.30', port: 443, protocol: 'TCP', balance: 'round-robin', direct: [], agentSlots: 0 }
const EMPTY_UDP: ProxyServicePort = { key: 'kube-system/dns', clusterIP: '10.96.0.53', port: 53, protocol: 'UDP', balance: 'round-robin', direct: [], agentSlots: 0 }
const REMOTE: ProxyServicePort = { key: 'edge/camera', clusterIP: '10.96.0.20', port: 554, protocol: 'TCP', balance: 'round-robin', direct: [], agentSlots: 2, agentTarget: '169.254.96.16:40123' }
const SET = [WEB, EMPTY, EMPTY_UDP, REMOTE]

const rejectLine = (s: ProxyServicePort): string => {
  const p = s.protocol.toLowerCase()
  return `-A ${REJECT} -d ${s.clusterIP}/32 -p ${p} -m comment --comment "${s.key} has no endpoints" -m ${p} --dport ${s.port} -j REJECT --reject-with ${p === 'tcp' ? 'tcp-reset' : 'icmp-port-unreachable'}`
}

const GOLDEN_FILTER = `*filter
:EDGEMESH-REJECT - [0:0]
-A EDGEMESH-REJECT -d 10.96.0.30/32 -p tcp -m comment --comment "default/empty has no endpoints" -m tcp --dport 443 -j REJECT --reject-with tcp-reset
-A EDGEMESH-REJECT -d 10.96.0.53/32 -p udp -m comment --comment "kube-system/dns has no endpoints" -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable
COMMIT
`

type Tables = Map<string, Map<string, string[]>>
const BUILTIN: Record<string, string[]> = { nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'], filter: ['INPUT', 'FORWARD', 'OUTPUT'] }
const emptyTables = (): Tables => new Map(Object.entries(BUILTIN).map(([t, chains]) => [t, new Map(chains.map((c) => [c, [] as string[]]))]))

/**
 * iptables-restore --noflush on a model of the nat and filter tables: `*table` ... COMMIT
 * sections in order; declaring a chain creates or flushes it; -A appends, -I <chain> 1 inserts
 * first, -D deletes the first identical rule, -X deletes an empty, unreferenced chain. Returns the
 * tables in the order their sections were committed.
 */
function applyRestore (tables: Tables, text: string): string[] {
  const order: string[] = []
  let cur: Map<string, string[]> | undefined
  for (const l of text.split('\n')) {
    if (l === '') continue
    if (l.startsWith('*')) {
      expect(cur, 'a section inside a section').toBeUndefined()
      cur = tables.get(l.slice(1))
      expect(cur, `${l}: known table`).toBeDefined()
      order.push(l.slice(1))
      continue
    }
    expect(cur, `${l}: inside a section`).toBeDefined()
    const t = cur!
    const chainOf = (rule: string): string => rule.split(' ')[1]!
    const check = (rule: string): void => {
      const target = / -j (\S+)/.exec(rule)?.[1]
      if (target?.startsWith(`${P}-`) === true) expect(t.has(target), `${rule}: target exists`).toBe(true)
      expect(t.has(chainOf(rule)), `${rule}: chain exists`).toBe(true)
    }
    if (l === 'COMMIT') cur = undefined
    else if (l.startsWith(':')) t.set(l.slice(1).split(' ')[0]!, [])
    else if (l.startsWith('-A ')) { check(l); t.get(chainOf(l))!.push(l) }
    else if (l.startsWith('-I ')) {
      const rule = l.replace(/^-I (\S+) 1 /, '-A $1 ')
      check(rule)
      t.get(chainOf(rule))!.unshift(rule)
    } else if (l.startsWith('-D ')) {
      const rule = `-A${l.slice(2)}`
      const rules = t.get(chainOf(rule))!
      const i = rules.indexOf(rule)
      expect(i, `${l}: rule exists`).toBeGreaterThanOrEqual(0)
      rules.splice(i, 1)
    } else if (l.startsWith('-X ')) {
      const chain = l.slice(3)
      expect(t.get(chain), `${l}: flushed before delete`).toEqual([])
      for (const rules of t.values()) expect(rules.some((r) => r.endsWith(`-j ${chain}`)), `${chain} still referenced`).toBe(false)
      t.delete(chain)
    } else throw new Error(`unexpected line ${l}`)
  }
  expect(cur, 'every section committed').toBeUndefined()
  return order
}
const model = (text: string): Tables => { const t = emptyTables(); applyRestore(t, text); return t }
const snapshot = (t: Tables): unknown => [...t].map(([name, chains]) => [name, [...chains].sort((a, b) => a[0] < b[0] ? -1 : 1)])

/** Where a new connection to `s` ends on this model: DNAT (nat first), REJECT, or out un-NATed. */
function verdict (t: Tables, s: ProxyServicePort, hook: 'PREROUTING' | 'OUTPUT' = 'PREROUTING'): 'dnat' | 'reject' | 'none' {
  const p = s.protocol.toLowerCase()
  const match = ` -d ${s.clusterIP}/32 -p ${p} -m ${p} --dport ${s.port} `
  const nat = t.get('nat')!
  const dnat = [...nat.entries()].some(([c, rules]) => c.startsWith(`${P}-B`) && rules.some((r) => r.includes(match) && r.includes(' -j DNAT ')))
  const hooked = (table: string, chain: string, target: string): boolean => t.get(table)!.get(chain)![0]?.endsWith(`-j ${target}`) === true
  if (dnat && hooked('nat', hook, `${P}-SERVICES`)) return 'dnat' // DNATed: the destination is no longer the ClusterIP
  const filterHook = hook === 'PREROUTING' ? 'FORWARD' : 'OUTPUT'
  if (hooked('filter', filterHook, REJECT) && t.get('filter')!.get(REJECT)!.includes(rejectLine(s))) return 'reject'
  return 'none'
}

describe('buildRejectRules', () => {
  it('refuses every service port without a target, one rule each in one chain; the nat rules stay as they were', () => {
    const r = buildSyncRules(SET, OPTS)
    expect(r.reject.text).toBe(GOLDEN_FILTER)
    expect(r.nat.text).toBe(buildRules(SET, OPTS).text) // the nat section is unchanged by the filter one
    expect(r.text).toBe(r.nat.text + GOLDEN_FILTER) // nat first
    expect(r.reject.chains).toEqual([REJECT])
    expect(r.reject.rejected.map((s) => s.key)).toEqual(['default/empty', 'kube-system/dns'])
    expect(r.state.reject.rules).toBe(2)
    // a service port served only by the agent (tunnel endpoints) is DNATed, not refused
    expect(r.reject.text).not.toContain(REMOTE.clusterIP)
    expect(r.nat.text).toContain(`-d ${REMOTE.clusterIP}/32 -p tcp -m tcp --dport 554 -j DNAT --to-destination 169.254.96.16:40123`)
    expect(rejectChain(P)).toBe(REJECT)
  })

  it('declares the chain even with nothing to refuse (the hooks always have a target)', () => {
    const r = buildRejectRules([], OPTS)
    expect(r.text).toBe('*filter\n:EDGEMESH-REJECT - [0:0]\nCOMMIT\n')
    expect(r.written).toEqual([REJECT])
    expect(r.state).toEqual({ chainPrefix: P, text: '', rules: 0 })
  })

  it('refuses a service port whose endpoints are all invalid and that has no agent share', () => {
    const r = buildSyncRules([{ ...WEB, direct: ['nonsense', '[fd00::1]:80'] }], OPTS)
    expect(r.reject.rejected.map((s) => s.key)).toEqual(['default/web'])
    expect(r.reject.text).toContain(rejectLine(WEB))
    expect(r.nat.text).not.toContain(WEB.clusterIP)
  })

  it('is deterministic, leaves out invalid ports and repeats of one ClusterIP:port/protocol, and never writes a hostile key', () => {
    const a = buildRejectRules([EMPTY, EMPTY_UDP], OPTS).text
    expect(buildRejectRules([EMPTY_UDP, EMPTY], OPTS).text).toBe(a)
    const r = buildRejectRules([
      EMPTY,
      { ...EMPTY, key: 'default/"evil" -j ACCEPT' },
      { ...EMPTY, key: 'default/v6', clusterIP: 'fd00::30' },
      { ...EMPTY, key: 'default/port', port: 70_000 },
      { ...EMPTY, key: 'default/zz-same-match' } // same ClusterIP, port and protocol as EMPTY
    ], OPTS)
    expect(r.rejected.map((s) => s.key)).toEqual(['default/empty'])
    expect(r.text.split('\n').filter((l) => l.startsWith('-A '))).toEqual([rejectLine(EMPTY)])
    expect(r.text).not.toContain('evil')
    // the same service on another protocol is another rule
    expect(buildRejectRules([EMPTY, { ...EMPTY, protocol: 'UDP' }], OPTS).rejected).toHaveLength(2)
  })

  it('rewrites the chain only when its rules changed or it is missing; deletes stale filter chains of ours', () => {
    const full = buildRejectRules([EMPTY], OPTS)
    expect(buildRejectRules([EMPTY], { ...OPTS, previous: full.state }).text).toBe('')
    expect(buildRejectRules([EMPTY], { ...OPTS, previous: full.state, existingChains: [REJECT] }).text).toBe('')
    const missing = buildRejectRules([EMPTY], { ...OPTS, previous: full.state, existingChains: [] })
    expect(missing.written).toEqual([REJECT])
    expect(missing.text).toBe(`*filter\n:${REJECT} - [0:0]\n${rejectLine(EMPTY)}\nCOMMIT\n`)
    const changed = buildRejectRules([EMPTY, EMPTY_UDP], { ...OPTS, previous: full.state })
    expect(changed.text).toBe(GOLDEN_FILTER)
    // hook repairs alone still make a section
    expect(buildRejectRules([EMPTY], { ...OPTS, previous: full.state, extraRules: filterJumpRules(P) }).text)
      .toBe(`*filter\n${filterJumpRules(P).join('\n')}\nCOMMIT\n`)
    // an older version's chain (and another prefix's, left alone)
    const stale = buildRejectRules([EMPTY], { ...OPTS, existingChains: [REJECT, 'EDGEMESH-OLD-FILTER', 'OTHER-REJECT'] })
    expect(stale.deleted).toEqual(['EDGEMESH-OLD-FILTER'])
    expect(stale.text).toBe(`*filter\n:${REJECT} - [0:0]\n:EDGEMESH-OLD-FILTER - [0:0]\n${rejectLine(EMPTY)}\n-X EDGEMESH-OLD-FILTER\nCOMMIT\n`)
    // a state of another prefix: full
    expect(buildRejectRules([EMPTY], { ...OPTS, previous: buildRejectRules([EMPTY], { chainPrefix: 'OTHER' }).state }).written).toEqual([REJECT])
  })
})

describe('buildSyncRules: endpoints come and go', () => {
  const hooks = (): string[] => filterJumpRules(P)
  const natHooks = (): string[] => jumpFixRules('', P)

  it('a Service that gains an endpoint loses its REJECT in the same payload that adds its DNAT, nat first', () => {
    const full = buildSyncRules(SET, { ...OPTS, natExtraRules: natHooks(), filterExtraRules: hooks() })
    const kernel = model(full.text)
    expect(verdict(kernel, EMPTY)).toBe('reject')
    expect(verdict(kernel, EMPTY, 'OUTPUT')).toBe('reject')
    expect(verdict(kernel, EMPTY_UDP)).toBe('reject')
    expect(verdict(kernel, WEB)).toBe('dnat')

    const ready = { ...EMPTY, direct: ['10.244.1.5:8443'] }
    const inc = buildSyncRules([WEB, ready, EMPTY_UDP, REMOTE], { ...OPTS, previous: full.state })
    expect(inc.nat.written).toEqual(['EDGEMESH-SERVICES', 'EDGEMESH-B030']) // a new bucket
    expect(inc.reject.written).toEqual([REJECT])
    expect(inc.reject.text).toBe(`*filter\n:${REJECT} - [0:0]\n${rejectLine(EMPTY_UDP)}\nCOMMIT\n`)
    // iptables-restore commits table by table: after nat alone the port is already DNATed (its
    // REJECT, still there, no longer matches), after both it has no REJECT left
    const afterNat = model(full.text)
    applyRestore(afterNat, inc.nat.text)
    expect(verdict(afterNat, ready)).toBe('dnat')
    expect(applyRestore(kernel, inc.text)).toEqual(['nat', 'filter'])
    expect(verdict(kernel, ready)).toBe('dnat')
    expect(kernel.get('filter')!.get(REJECT)).toEqual([rejectLine(EMPTY_UDP)])
    expect(snapshot(kernel)).toEqual(snapshot(model(buildSyncRules([WEB, ready, EMPTY_UDP, REMOTE], { ...OPTS, natExtraRules: natHooks(), filterExtraRules: hooks() }).text)))
  })

  it('a Service whose endpoints all become unready is refused in the same payload that removes its DNAT', () => {
    const full = buildSyncRules(SET, { ...OPTS, natExtraRules: natHooks(), filterExtraRules: hooks() })
    const kernel = model(full.text)
    const unready = { ...WEB, direct: [] }
    const inc = buildSyncRules([unready, EMPTY, EMPTY_UDP, REMOTE], { ...OPTS, previous: full.state })
    expect(inc.nat.deleted).toEqual(['EDGEMESH-B010'])
    expect(inc.reject.rejected.map((s) => s.key)).toEqual(['default/empty', 'default/web', 'kube-system/dns'])
    applyRestore(kernel, inc.text)
    expect(verdict(kernel, WEB)).toBe('reject')
    expect(verdict(kernel, WEB, 'OUTPUT')).toBe('reject')
    // and back
    const back = buildSyncRules(SET, { ...OPTS, previous: inc.state })
    applyRestore(kernel, back.text)
    expect(verdict(kernel, WEB)).toBe('dnat')
    expect(kernel.get('filter')!.get(REJECT)).toEqual([rejectLine(EMPTY), rejectLine(EMPTY_UDP)])
  })

  it('an endpoint change elsewhere leaves the filter table alone (no filter section at all)', () => {
    const full = buildSyncRules(SET, OPTS)
    const inc = buildSyncRules([{ ...WEB, direct: ['10.244.1.2:8080', '10.244.1.3:8080'] }, EMPTY, EMPTY_UDP, REMOTE], { ...OPTS, previous: full.state })
    expect(inc.nat.written).toEqual(['EDGEMESH-B010'])
    expect(inc.reject.text).toBe('')
    expect(inc.text).not.toContain('*filter')
    expect(buildSyncRules(SET, { ...OPTS, previous: full.state }).text).toBe('')
  })

  it('turns a full sync into the next state exactly in both tables, over many random changes', () => {
    let seed = 4242 // mulberry32
    const rand = (n: number): number => {
      seed = (seed + 0x6D2B79F5) | 0
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n)
    }
    let services: ProxyServicePort[] = Array.from({ length: 50 }, (_, i) => ({
      key: `ns/svc-${i}`, clusterIP: `10.${100 + i}.0.${rand(10)}`, port: 80 + rand(3), protocol: rand(2) === 0 ? 'TCP' : 'UDP',
      balance: 'round-robin', direct: rand(3) === 0 ? [] : [`10.1.0.${rand(250) + 1}:80`], agentSlots: rand(4) === 0 ? 1 : 0, agentTarget: '169.254.96.16:40000'
    }))
    let last = buildSyncRules(services, { ...OPTS, natExtraRules: natHooks(), filterExtraRules: hooks() })
    const kernel = model(last.text)
    let rejectWrites = 0
    for (let round = 0; round < 100; round++) {
      services = services.map((s) => {
        switch (rand(8)) {
          case 0: return { ...s, direct: [] } // every endpoint unready
          case 1: return { ...s, direct: [`10.1.1.${rand(250) + 1}:80`] } // ready again
          case 2: return { ...s, agentSlots: rand(2) }
          case 3: return { ...s, clusterIP: s.clusterIP.replace(/\.\d+$/, `.${rand(10)}`) } // another bucket (ClusterIPs stay unique)
          default: return s
        }
      })
      const existing = round % 10 === 0 ? { existing: { nat: [...kernel.get('nat')!.keys()].filter((c) => c.startsWith(`${P}-`)), filter: [...kernel.get('filter')!.keys()].filter((c) => c.startsWith(`${P}-`)) } } : {}
      const next = buildSyncRules(services, { ...OPTS, previous: last.state, ...existing })
      applyRestore(kernel, next.text)
      rejectWrites += next.reject.written.length
      const fresh = buildSyncRules(services, { ...OPTS, natExtraRules: natHooks(), filterExtraRules: hooks() })
      expect(snapshot(kernel)).toEqual(snapshot(model(fresh.text)))
      for (const s of services) {
        const targets = s.direct.length + s.agentSlots
        expect(verdict(kernel, s), `${s.key} round ${round}`).toBe(targets > 0 ? 'dnat' : 'reject')
      }
      last = next
    }
    expect(rejectWrites).toBeGreaterThan(10)
  })

  it('a sync state carries what the periodic check compares: the number of REJECT rules', () => {
    const s: SyncRuleState = buildSyncRules(SET, OPTS).state
    expect(s.reject.rules).toBe(2)
    expect(s.nat.buckets.size).toBe(2) // 10 (web) and 20 (camera)
  })
})

describe('filter hooks', () => {
  it('hooks REJECT at the top of INPUT, FORWARD and OUTPUT, for new connections only', () => {
    expect(filterJumpRules(P)).toEqual([
      '-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "edgemesh service ports without endpoints" -j EDGEMESH-REJECT',
      '-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment "edgemesh service ports without endpoints" -j EDGEMESH-REJECT',
      '-I OUTPUT 1 -m conntrack --ctstate NEW -m comment --comment "edgemesh service ports without endpoints" -j EDGEMESH-REJECT'
    ])
  })

  it('filterHookFixRules: repairs from an `iptables -t filter -S <hook>` listing', () => {
    const ours = '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "edgemesh service ports without endpoints" -j EDGEMESH-REJECT'
    const kube = '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    const cni = '-A FORWARD -i cni0 -j ACCEPT'
    expect(filterHookFixRules('FORWARD', `-P FORWARD ACCEPT\n${ours}\n${kube}\n${cni}\n`, P)).toEqual([])
    expect(filterHookFixRules('FORWARD', '-P FORWARD DROP\n', P)).toEqual([filterJumpRules(P)[1]])
    // a CNI's ACCEPT got in first (it would let the connection through before our REJECT), counters from -v
    expect(filterHookFixRules('FORWARD', `-P FORWARD ACCEPT -c 0 0\n${cni} -c 10 600\n${ours} -c 1 60\n${kube}\n`, P)).toEqual([
      `-D${ours.slice(2)}`,
      filterJumpRules(P)[1]
    ])
    expect(filterHookFixRules('OUTPUT', '-P OUTPUT ACCEPT\n', P)).toEqual([filterJumpRules(P)[2]])
    expect(filterHookFixRules('INPUT', '-P INPUT ACCEPT\n-A INPUT -j EDGEMESH-SERVICES\n', P)).toEqual([filterJumpRules(P)[0]])
    expect(() => filterHookFixRules('PREROUTING' as 'INPUT', '', P)).toThrow(/not a filter hook chain/)
  })

  it('repairs from iptables-save text; cleanup removes the chain and its hooks with the nat ones', () => {
    const hooked = filterJumpRules(P).map((r) => r.replace(/^-I (\S+) 1 /, '-A $1 '))
    const save = `*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:${REJECT} - [0:0]\n:KUBE-FORWARD - [0:0]\n` +
      `${hooked.join('\n')}\n-A FORWARD -j KUBE-FORWARD\n${rejectLine(EMPTY)}\nCOMMIT\n`
    expect(needsJumpFix(save, P, 'filter')).toBe(false)
    expect(jumpFixRules(save, P, 'filter')).toEqual([])
    expect(jumpFixRules('', P, 'filter')).toEqual(filterJumpRules(P))
    expect(parseChains(save, P, 'filter')).toEqual([REJECT])
    const shadowed = save.replace(`${hooked[1]}\n`, '-A FORWARD -j KUBE-FORWARD\n').replace('-A FORWARD -j KUBE-FORWARD\n' + rejectLine(EMPTY), `${hooked[1]}\n${rejectLine(EMPTY)}`)
    expect(jumpFixRules(shadowed, P, 'filter')).toEqual([`-D${hooked[1]!.slice(2)}`, filterJumpRules(P)[1]])

    const nat = buildSyncRules(SET, { ...OPTS, natExtraRules: jumpFixRules('', P) })
    const kernel = model(nat.text)
    applyRestore(kernel, `*filter\n${filterJumpRules(P).join('\n')}\nCOMMIT\n`)
    const asSave = [...kernel].map(([t, chains]) => `*${t}\n${[...chains.keys()].map((c) => `:${c} - [0:0]`).join('\n')}\n${[...chains.values()].flat().join('\n')}\nCOMMIT\n`).join('')
    const text = cleanupRules(asSave, P)
    expect(text.startsWith('*filter\n')).toBe(true)
    applyRestore(kernel, text)
    for (const [, chains] of kernel) {
      for (const [c, rules] of chains) {
        expect(c.startsWith(`${P}-`)).toBe(false)
        expect(rules.filter((r) => r.includes(`${P}-`))).toEqual([])
      }
    }
  })
})

describe('scale', () => {
  it('10,000 service ports: the filter section is one chain whatever the number refused, and one gaining an endpoint rewrites one bucket and the chain', () => {
    const make = (withoutEndpoints: (i: number) => boolean): ProxyServicePort[] => Array.from({ length: 10_000 }, (_, i) => ({
      key: `ns-${i % 50}/svc-${i}`, clusterIP: `10.96.${i >> 8}.${i & 255}`, port: 80, protocol: 'TCP',
      balance: 'round-robin', agentSlots: 0, direct: withoutEndpoints(i) ? [] : [0, 1, 2].map((e) => `10.244.${(i >> 8) & 255}.${(i * 3 + e) & 255}:8080`)
    }))
    const some = buildSyncRules(make((i) => i % 100 === 0), OPTS)
    expect(some.reject.rejected).toHaveLength(100)
    expect(some.reject.chains).toEqual([REJECT])
    expect(some.nat.chains).toHaveLength(258)
    const all = buildSyncRules(make(() => true), OPTS)
    expect(all.reject.rejected).toHaveLength(10_000)
    expect(all.nat.chains).toHaveLength(2) // SERVICES and POSTROUTING only
    expect(all.reject.text.split('\n').filter((l) => l.startsWith(`:${P}-`))).toEqual([`:${REJECT} - [0:0]`])

    const gains = make((i) => i % 100 === 0 && i !== 4200)
    const inc = buildSyncRules(gains, { ...OPTS, previous: some.state })
    expect(inc.nat.written).toEqual([`${P}-B${String(4200 & 255).padStart(3, '0')}`])
    expect(inc.reject.written).toEqual([REJECT])
    expect(inc.reject.rejected).toHaveLength(99)
    console.log(`proxy reject rules, 10,000 service ports: 100 without endpoints -> filter section ${some.reject.text.length} bytes; ` +
      `all 10,000 -> ${(all.reject.text.length / 1e6).toFixed(1)} MB; one gaining an endpoint -> ${inc.text.length} bytes (nat + filter)`)
  })
})
