// Unit tests for the ClusterIP proxy's iptables rule generation (agent/proxy/rules.ts).
// Pure text in, text out: nothing here runs iptables. The kernel's nth/random matches and
// iptables-restore's chain handling are simulated from the generated text.
import { describe, expect, it } from 'vitest'
import {
  MAX_CHAIN_LEN, affinityListName, bucketChainName, bucketOf, buildRules, cleanupRules, hookFixRules,
  jumpFixRules, jumpRules, needsJumpFix, parseChains, type ProxyServicePort, type RuleState
} from '../../agent/proxy/rules.ts'

const P = 'EDGEMESH'
const OPTS = { chainPrefix: P }

const WEB: ProxyServicePort = { key: 'default/web', clusterIP: '10.96.0.10', port: 80, protocol: 'TCP', balance: 'round-robin', direct: ['10.244.1.3:8080', '10.244.1.2:8080', '10.244.2.5:8080'], agentSlots: 0 }
const API: ProxyServicePort = { key: 'default/api', clusterIP: '10.96.1.10', port: 443, protocol: 'TCP', balance: 'random', direct: ['10.244.2.8:8443', '10.244.1.8:8443'], agentSlots: 2, agentTarget: '169.254.96.16:40124' }
const CAMERA: ProxyServicePort = { key: 'edge/camera', clusterIP: '10.96.0.20', port: 554, protocol: 'TCP', balance: 'round-robin', direct: ['192.168.8.20:554', '10.244.1.7:554'], agentSlots: 3, agentTarget: '169.254.96.16:40123' }
const DNS: ProxyServicePort = { key: 'kube-system/dns', clusterIP: '10.96.0.53', port: 53, protocol: 'UDP', balance: 'round-robin', direct: ['10.244.1.9:53', '10.244.2.9:53'], agentSlots: 0 }
const SESSION: ProxyServicePort = { key: 'default/session', clusterIP: '10.96.0.11', port: 8443, protocol: 'TCP', balance: 'round-robin', direct: ['10.244.1.4:8443'], agentSlots: 1, agentTarget: '169.254.96.16:40125', affinitySeconds: 10800 }
const EMPTY: ProxyServicePort = { key: 'default/empty', clusterIP: '10.96.0.30', port: 443, protocol: 'TCP', balance: 'round-robin', direct: [], agentSlots: 0 }
const SET = [WEB, API, CAMERA, DNS, SESSION, EMPTY]

// bucket 10 holds default/api (10.96.1.10) and default/web (10.96.0.10), sorted by key; each
// service port's hairpin marks (one per direct endpoint IP) come before its DNAT rules
const GOLDEN = `*nat
:EDGEMESH-SERVICES - [0:0]
:EDGEMESH-POSTROUTING - [0:0]
:EDGEMESH-B010 - [0:0]
:EDGEMESH-B011 - [0:0]
:EDGEMESH-B020 - [0:0]
:EDGEMESH-B053 - [0:0]
-A EDGEMESH-SERVICES -d 0.0.0.10/0.0.0.255 -m comment --comment "edgemesh ClusterIPs x.x.x.10" -j EDGEMESH-B010
-A EDGEMESH-SERVICES -d 0.0.0.11/0.0.0.255 -m comment --comment "edgemesh ClusterIPs x.x.x.11" -j EDGEMESH-B011
-A EDGEMESH-SERVICES -d 0.0.0.20/0.0.0.255 -m comment --comment "edgemesh ClusterIPs x.x.x.20" -j EDGEMESH-B020
-A EDGEMESH-SERVICES -d 0.0.0.53/0.0.0.255 -m comment --comment "edgemesh ClusterIPs x.x.x.53" -j EDGEMESH-B053
-A EDGEMESH-POSTROUTING -m mark --mark 0x200000/0x200000 -j MASQUERADE
-A EDGEMESH-B010 -s 10.244.1.8/32 -d 10.96.1.10/32 -p tcp -m tcp --dport 443 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B010 -s 10.244.2.8/32 -d 10.96.1.10/32 -p tcp -m tcp --dport 443 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B010 -d 10.96.1.10/32 -p tcp -m tcp --dport 443 -m statistic --mode random --probability 0.2500000000 -j DNAT --to-destination 10.244.1.8:8443
-A EDGEMESH-B010 -d 10.96.1.10/32 -p tcp -m tcp --dport 443 -m statistic --mode random --probability 0.3333333333 -j DNAT --to-destination 10.244.2.8:8443
-A EDGEMESH-B010 -d 10.96.1.10/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination 169.254.96.16:40124
-A EDGEMESH-B010 -s 10.244.1.2/32 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B010 -s 10.244.1.3/32 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B010 -s 10.244.2.5/32 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B010 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m statistic --mode nth --every 3 --packet 0 -j DNAT --to-destination 10.244.1.2:8080
-A EDGEMESH-B010 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.244.1.3:8080
-A EDGEMESH-B010 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.244.2.5:8080
-A EDGEMESH-B011 -s 10.244.1.4/32 -d 10.96.0.11/32 -p tcp -m tcp --dport 8443 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B011 -d 10.96.0.11/32 -p tcp -m tcp --dport 8443 -m recent --name EDGEMESH-ALXJITN5K6EO6SH5R --mask 255.255.255.255 --rsource --update --seconds 10800 --reap -j DNAT --to-destination 10.244.1.4:8443
-A EDGEMESH-B011 -d 10.96.0.11/32 -p tcp -m tcp --dport 8443 -m recent --name EDGEMESH-AHQSN5XD7ICPT6YEY --mask 255.255.255.255 --rsource --update --seconds 10800 --reap -j DNAT --to-destination 169.254.96.16:40125
-A EDGEMESH-B011 -d 10.96.0.11/32 -p tcp -m tcp --dport 8443 -m statistic --mode nth --every 2 --packet 0 -m recent --name EDGEMESH-ALXJITN5K6EO6SH5R --mask 255.255.255.255 --rsource --set -j DNAT --to-destination 10.244.1.4:8443
-A EDGEMESH-B011 -d 10.96.0.11/32 -p tcp -m tcp --dport 8443 -m recent --name EDGEMESH-AHQSN5XD7ICPT6YEY --mask 255.255.255.255 --rsource --set -j DNAT --to-destination 169.254.96.16:40125
-A EDGEMESH-B020 -s 10.244.1.7/32 -d 10.96.0.20/32 -p tcp -m tcp --dport 554 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B020 -s 192.168.8.20/32 -d 10.96.0.20/32 -p tcp -m tcp --dport 554 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B020 -d 10.96.0.20/32 -p tcp -m tcp --dport 554 -m statistic --mode nth --every 5 --packet 0 -j DNAT --to-destination 10.244.1.7:554
-A EDGEMESH-B020 -d 10.96.0.20/32 -p tcp -m tcp --dport 554 -m statistic --mode nth --every 4 --packet 0 -j DNAT --to-destination 192.168.8.20:554
-A EDGEMESH-B020 -d 10.96.0.20/32 -p tcp -m tcp --dport 554 -j DNAT --to-destination 169.254.96.16:40123
-A EDGEMESH-B053 -s 10.244.1.9/32 -d 10.96.0.53/32 -p udp -m udp --dport 53 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B053 -s 10.244.2.9/32 -d 10.96.0.53/32 -p udp -m udp --dport 53 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B053 -d 10.96.0.53/32 -p udp -m udp --dport 53 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.244.1.9:53
-A EDGEMESH-B053 -d 10.96.0.53/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.244.2.9:53
COMMIT
`

/** The rules of one service port (by its match) in a payload, in order: hairpin marks and DNATs. */
function allPortLines (text: string, s: ProxyServicePort): string[] {
  const proto = s.protocol.toLowerCase()
  const match = ` -d ${s.clusterIP}/32 -p ${proto} -m ${proto} --dport ${s.port} `
  return text.split('\n').filter((l) => l.startsWith(`-A ${P}-B`) && l.includes(match))
}
/** The DNAT rules of one service port (affinity checks and spread), in order. */
const portLines = (text: string, s: ProxyServicePort): string[] => allPortLines(text, s).filter((l) => l.includes(' -j DNAT '))
/** The hairpin marks of one service port, in order. */
const markLines = (text: string, s: ProxyServicePort): string[] => allPortLines(text, s).filter((l) => l.includes(' -j MARK '))
/** GOLDEN without hairpin: no marks, an empty POSTROUTING chain (still declared). */
const GOLDEN_NO_HAIRPIN = GOLDEN.split('\n').filter((l) => !l.includes(' -j MARK ') && !l.includes(' -j MASQUERADE')).join('\n')
const dnatTarget = (rule: string): string => /--to-destination (\S+)$/.exec(rule)![1]!

/**
 * New connections through a service port's spread rules as the kernel runs them (xt_statistic):
 * each nth rule has its own counter, advanced only by the packets that reach it, matching when it
 * wraps to 0; iptables starts it at every - 1 - packet, so `--packet 0` matches the first packet
 * (checked in the lab e2e). The first rule whose matches all hold takes the connection.
 */
function simulateNth (rules: string[], connections: number): Map<string, number> {
  const spread = rules.filter((r) => !r.includes('--update'))
  const nth = spread.map((r) => {
    const m = /--mode nth --every (\d+) --packet (\d+)/.exec(r)
    return m == null ? undefined : { every: Number(m[1]), count: Number(m[1]) - 1 - Number(m[2]) }
  })
  const got = new Map<string, number>()
  for (let c = 0; c < connections; c++) {
    for (let i = 0; i < spread.length; i++) {
      const n = nth[i]
      if (n != null) {
        n.count = n.count === n.every - 1 ? 0 : n.count + 1
        if (n.count !== 0) continue
      }
      const t = dnatTarget(spread[i]!)
      got.set(t, (got.get(t) ?? 0) + 1)
      break
    }
  }
  return got
}

/** Exact share of each target under `--mode random`: its probability times the misses before it. */
function randomShares (rules: string[]): Map<string, number> {
  const shares = new Map<string, number>()
  let miss = 1
  for (const r of rules) {
    const m = /--probability (\S+)/.exec(r)
    const p = m == null ? 1 : Number(m[1])
    shares.set(dnatTarget(r), miss * p)
    miss *= 1 - p
  }
  return shares
}

/** iptables-restore --noflush on a model of the nat table's chains (declare = create or flush). */
function applyRestore (table: Map<string, string[]>, text: string): void {
  if (text === '') return
  const lines = text.split('\n')
  expect(lines[0]).toBe('*nat')
  expect(lines.at(-2)).toBe('COMMIT')
  for (const l of lines.slice(1, -2)) {
    if (l.startsWith(':')) table.set(l.slice(1).split(' ')[0]!, [])
    else if (l.startsWith('-A ')) {
      const chain = l.split(' ')[1]!
      const target = / -j (\S+)/.exec(l)?.[1]
      if (target?.startsWith(`${P}-`) === true) expect(table.has(target), `${l}: target exists`).toBe(true)
      expect(table.has(chain), `${l}: chain exists`).toBe(true)
      table.get(chain)!.push(l)
    } else if (l.startsWith('-X ')) {
      const chain = l.slice(3)
      expect(table.get(chain), `${l}: flushed before delete`).toEqual([])
      for (const rules of table.values()) expect(rules.some((r) => r.endsWith(`-j ${chain}`)), `${chain} still referenced`).toBe(false)
      table.delete(chain)
    } else throw new Error(`unexpected line ${l}`)
  }
}
const model = (text: string): Map<string, string[]> => { const t = new Map<string, string[]>(); applyRestore(t, text); return t }
const sortedModel = (t: Map<string, string[]>): Array<[string, string[]]> => [...t].sort((a, b) => a[0] < b[0] ? -1 : 1)

// what iptables-save -t nat prints on a node where kube-proxy (re)started after us, with chains
// of the old per-service layout still around
const SAVE_KUBE_FIRST = `# Generated by iptables-save v1.8.9 (nf_tables) on Mon Jan  1 00:00:00 2024
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:EDGEMESH-SERVICES - [0:0]
:EDGEMESH-POSTROUTING - [0:0]
:EDGEMESH-SVC-CZMAQ2PQVC6KCDZ - [0:0]
:EDGEMESH-SEP-STALESTALESTALE - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -m comment --comment "edgemesh postrouting rules" -j EDGEMESH-POSTROUTING
-A EDGEMESH-POSTROUTING -m mark --mark 0x200000/0x200000 -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A EDGEMESH-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment "default/web:80" -j EDGEMESH-SVC-CZMAQ2PQVC6KCDZ
-A EDGEMESH-SVC-CZMAQ2PQVC6KCDZ -j EDGEMESH-SEP-STALESTALESTALE
-A EDGEMESH-SEP-STALESTALESTALE -p tcp -m tcp -j DNAT --to-destination 10.244.9.9:80
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y
COMMIT
# Completed on Mon Jan  1 00:00:00 2024
*filter
:INPUT ACCEPT [0:0]
:EDGEMESH-REJECT - [0:0]
-A INPUT -j EDGEMESH-REJECT
COMMIT
`
const SAVE_OURS_FIRST = `*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:EDGEMESH-SERVICES - [0:0]
:EDGEMESH-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
[12:720] -A PREROUTING -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES
[3:180] -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
[40:2400] -A POSTROUTING -m comment --comment "edgemesh postrouting rules" -j EDGEMESH-POSTROUTING
-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
COMMIT
`
const SAVE_MISSING = `*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
COMMIT
`

describe('buildRules: layout', () => {
  it('produces the golden nat payload', () => {
    const r = buildRules(SET, OPTS)
    expect(r.text).toBe(GOLDEN)
    expect(r.chains).toEqual(['EDGEMESH-SERVICES', 'EDGEMESH-POSTROUTING', 'EDGEMESH-B010', 'EDGEMESH-B011', 'EDGEMESH-B020', 'EDGEMESH-B053'])
    expect(r.written).toEqual(r.chains)
    expect(r.deleted).toEqual([])
    expect(r.skipped).toEqual([])
    expect([...r.state.buckets.keys()]).toEqual([10, 11, 20, 53])
  })

  it('buckets by the low byte of the ClusterIP, named with three digits', () => {
    expect(bucketOf('10.96.0.5')).toBe(5)
    expect(bucketOf('172.20.255.255')).toBe(255)
    expect(bucketOf('10.96.3.0')).toBe(0)
    expect(bucketChainName(P, 5)).toBe('EDGEMESH-B005')
    expect(bucketChainName(P, 255)).toBe('EDGEMESH-B255')
    const r = buildRules([{ ...WEB, clusterIP: '10.96.7.0' }, { ...DNS, clusterIP: '10.96.7.255' }], OPTS)
    expect(r.text).toContain('-A EDGEMESH-SERVICES -d 0.0.0.0/0.0.0.255 -m comment --comment "edgemesh ClusterIPs x.x.x.0" -j EDGEMESH-B000\n')
    expect(r.text).toContain('-A EDGEMESH-SERVICES -d 0.0.0.255/0.0.0.255 -m comment --comment "edgemesh ClusterIPs x.x.x.255" -j EDGEMESH-B255\n')
  })

  it('keeps comments out of the bucket chains and every rule carries the service match', () => {
    const r = buildRules(SET, OPTS)
    const bucketRules = r.text.split('\n').filter((l) => l.startsWith('-A EDGEMESH-B'))
    expect(bucketRules).toHaveLength(15 + 10) // DNATs + hairpin marks
    for (const l of bucketRules) {
      expect(l).not.toContain('comment')
      expect(l).toMatch(/^-A EDGEMESH-B\d{3} (-d [0-9.]+\/32 -p (tcp -m tcp|udp -m udp) --dport \d+ .*-j DNAT --to-destination [0-9.]+:\d+|-s [0-9.]+\/32 -d [0-9.]+\/32 -p (tcp -m tcp|udp -m udp) --dport \d+ -j MARK --set-xmark 0x200000\/0x200000)$/)
    }
  })

  it('emits nothing in nat for a service port without targets and reports it', () => {
    const r = buildRules(SET, OPTS)
    expect(r.noEndpoints.map((s) => s.key)).toEqual(['default/empty'])
    expect(r.text).not.toContain('10.96.0.30')
    expect(r.text).not.toContain('REJECT')
    // invalid endpoints only and no agent share: no targets either
    expect(buildRules([{ ...DNS, direct: ['nonsense'] }], OPTS).noEndpoints.map((s) => s.key)).toEqual(['kube-system/dns'])
    // an agent share alone is a target
    const agentOnly = buildRules([{ ...CAMERA, direct: [] }], OPTS)
    expect(agentOnly.noEndpoints).toEqual([])
    expect(portLines(agentOnly.text, CAMERA)).toEqual(['-A EDGEMESH-B020 -d 10.96.0.20/32 -p tcp -m tcp --dport 554 -j DNAT --to-destination 169.254.96.16:40123'])
  })

  it('is deterministic regardless of input order and endpoint order/duplicates', () => {
    const a = buildRules(SET, OPTS).text
    const b = buildRules([...SET].reverse().map((s) => ({ ...s, direct: [...s.direct].reverse() })), OPTS).text
    const c = buildRules(SET.map((s) => ({ ...s, direct: [...s.direct, ...s.direct] })), OPTS).text
    const d = buildRules(SET.map((s) => ({ ...s, direct: s.direct.map((e) => e.replace(/:(\d+)$/, ':0$1')) })), OPTS).text
    expect(b).toBe(a)
    expect(c).toBe(a)
    expect(d).toBe(a) // ports normalized
    expect(buildRules(SET, OPTS).text).toBe(a) // and from the per-port memo
  })

  it('does not let a mutated input object reuse stale memoized rules', () => {
    const s: ProxyServicePort = { ...WEB, direct: [...WEB.direct] }
    const before = buildRules([s], OPTS).text
    s.direct.push('10.244.3.1:8080')
    const after = buildRules([s], OPTS).text
    expect(after).not.toBe(before)
    expect(after).toContain('--every 4 --packet 0 -j DNAT --to-destination 10.244.1.2:8080')
    s.direct.pop()
    expect(buildRules([s], OPTS).text).toBe(before)
  })

  it('stays correct when the per-port memo drops what a build did not use', () => {
    const many = Array.from({ length: 3000 }, (_, i): ProxyServicePort => ({ ...WEB, key: `sweep/svc-${i}`, clusterIP: `10.98.${i >> 8}.${i & 255}` }))
    const before = buildRules(many, OPTS).text
    expect(buildRules(many.slice(0, 10), OPTS).chains).toHaveLength(12) // the other 2990 are dropped from the memo
    expect(buildRules(many, OPTS).text).toBe(before)
  })

  it('skips invalid service ports and endpoints instead of emitting broken text', () => {
    const r = buildRules([
      { ...WEB, key: 'default/"evil"\n-A INPUT -j ACCEPT' },
      { ...WEB, key: 'default/v6', clusterIP: 'fd00::10' },
      { ...WEB, key: 'default/port', port: 0 },
      { ...WEB, key: 'default/sctp', protocol: 'SCTP' as 'TCP' },
      { ...WEB, key: 'default/lb', balance: 'least-request' as 'random' },
      { ...CAMERA, key: 'edge/notarget', agentTarget: undefined },
      { ...CAMERA, key: 'edge/badtarget', agentTarget: 'fd00::1:80' },
      { ...CAMERA, key: 'edge/slots', agentSlots: 1.5 },
      { ...SESSION, key: 'edge/sticky', affinitySeconds: 86_401 },
      { ...DNS, direct: ['10.244.1.9:53', 'nonsense', '10.0.0.1:99999', '[fd00::1]:53'] },
      { ...DNS, clusterIP: '10.96.0.54' }
    ], OPTS)
    expect(r.skipped).toEqual([
      { key: 'default/"evil"\n-A INPUT -j ACCEPT', reason: 'invalid key' },
      { key: 'default/lb', reason: 'unknown balance' },
      { key: 'default/port', reason: 'invalid port' },
      { key: 'default/sctp', reason: 'unsupported protocol' },
      { key: 'default/v6', reason: 'clusterIP is not IPv4' },
      { key: 'edge/badtarget', reason: 'agentSlots without a valid agentTarget' },
      { key: 'edge/notarget', reason: 'agentSlots without a valid agentTarget' },
      { key: 'edge/slots', reason: 'invalid agentSlots' },
      { key: 'edge/sticky', reason: 'invalid affinitySeconds' },
      { key: 'kube-system/dns', reason: 'invalid endpoint "nonsense"' },
      { key: 'kube-system/dns', reason: 'invalid endpoint "10.0.0.1:99999"' },
      { key: 'kube-system/dns', reason: 'invalid endpoint "[fd00::1]:53"' },
      { key: 'kube-system/dns', reason: 'duplicate 53/UDP' }
    ])
    expect(r.text).not.toContain('evil')
    expect(r.text).not.toContain('10.96.0.54') // the first given of a duplicate wins
    expect(r.chains).toEqual(['EDGEMESH-SERVICES', 'EDGEMESH-POSTROUTING', 'EDGEMESH-B053'])
    expect(portLines(r.text, DNS).map(dnatTarget)).toEqual(['10.244.1.9:53'])
    expect(markLines(r.text, DNS)).toEqual(['-A EDGEMESH-B053 -s 10.244.1.9/32 -d 10.96.0.53/32 -p udp -m udp --dport 53 -j MARK --set-xmark 0x200000/0x200000'])
  })

  it('rejects bad prefixes', () => {
    expect(() => buildRules([], { chainPrefix: 'BAD PREFIX' })).toThrow(/invalid chain prefix/)
    // <prefix>-POSTROUTING must fit in 28 characters
    expect(() => buildRules([], { chainPrefix: 'A_LONG_PREFIX_17X' })).toThrow(/too long \(max 16 characters\)/)
    expect(() => hookFixRules('POSTROUTING', '', 'A_LONG_PREFIX_17X')).toThrow(/too long/)
    expect(buildRules([], { chainPrefix: 'A_LONG_PREFIX_16' }).text).toBe('*nat\n:A_LONG_PREFIX_16-SERVICES - [0:0]\n:A_LONG_PREFIX_16-POSTROUTING - [0:0]\n' +
      '-A A_LONG_PREFIX_16-POSTROUTING -m mark --mark 0x200000/0x200000 -j MASQUERADE\nCOMMIT\n')
    expect('A_LONG_PREFIX_16-POSTROUTING').toHaveLength(MAX_CHAIN_LEN)
  })
})

describe('buildRules: balancing', () => {
  it('round robin: the nth rules give every target exactly its share', () => {
    const cases: Array<[number, number, number[]]> = [
      // direct endpoints, agent slots, expected connections per direct endpoint then the agent
      [2, 3, [2000, 2000, 6000]],
      [3, 0, [3334, 3333, 3333]], // 10,000 is not a multiple of 3: the first rule's phase comes first
      [5, 0, [2000, 2000, 2000, 2000, 2000]],
      [3, 7, [1000, 1000, 1000, 7000]],
      [1, 0, [10_000]],
      [0, 4, [10_000]]
    ]
    for (const [ndirect, agentSlots, want] of cases) {
      const s: ProxyServicePort = {
        ...CAMERA, direct: Array.from({ length: ndirect }, (_, i) => `10.244.0.${i + 1}:554`), agentSlots
      }
      const rules = portLines(buildRules([s], OPTS).text, s)
      expect(rules).toHaveLength(want.length)
      const got = simulateNth(rules, 10_000)
      expect([...got.values()].reduce((a, b) => a + b)).toBe(10_000)
      expect(rules.map((r) => got.get(dnatTarget(r)) ?? 0), `${ndirect} direct + ${agentSlots} slots`).toEqual(want)
    }
  })

  it('round robin: no statistic match where only one share remains', () => {
    const rules = portLines(buildRules([WEB], OPTS).text, WEB)
    expect(rules.map((r) => /--every (\d+)/.exec(r)?.[1] ?? 'last')).toEqual(['3', '2', 'last'])
    expect(GOLDEN).not.toContain('--every 1 ')
  })

  it('random: probabilities w/remaining with 10 decimals give each target its exact share', () => {
    const s: ProxyServicePort = { ...API, direct: ['10.244.0.1:8443', '10.244.0.2:8443', '10.244.0.3:8443'], agentSlots: 2 }
    const rules = portLines(buildRules([s], OPTS).text, s)
    expect(rules.map((r) => /--probability (\S+)/.exec(r)?.[1] ?? 'last')).toEqual(['0.2000000000', '0.2500000000', '0.3333333333', 'last'])
    const shares = randomShares(rules)
    expect(shares.get('10.244.0.1:8443')).toBeCloseTo(0.2, 9)
    expect(shares.get('10.244.0.2:8443')).toBeCloseTo(0.2, 9)
    expect(shares.get('10.244.0.3:8443')).toBeCloseTo(0.2, 9)
    expect(shares.get('169.254.96.16:40124')).toBeCloseTo(0.4, 9)
    // many endpoints: still 1/N each within the 10-decimal rounding
    const many: ProxyServicePort = { ...API, direct: Array.from({ length: 97 }, (_, i) => `10.245.${i >> 8}.${i & 255}:80`), agentSlots: 0 }
    for (const share of randomShares(portLines(buildRules([many], OPTS).text, many)).values()) expect(share).toBeCloseTo(1 / 97, 8)
  })

  it('ClientIP affinity: refresh-checks for every target first, then the spread records the chosen one', () => {
    const s: ProxyServicePort = { ...CAMERA, affinitySeconds: 600 }
    const rules = portLines(buildRules([s], OPTS).text, s)
    const targets = ['10.244.1.7:554', '192.168.8.20:554', '169.254.96.16:40123']
    const lists = targets.map((t) => affinityListName(P, s.key, s.port, s.protocol, t))
    const match = '-A EDGEMESH-B020 -d 10.96.0.20/32 -p tcp -m tcp --dport 554'
    expect(rules).toEqual([
      ...targets.map((t, i) => `${match} -m recent --name ${lists[i]} --mask 255.255.255.255 --rsource --update --seconds 600 --reap -j DNAT --to-destination ${t}`),
      `${match} -m statistic --mode nth --every 5 --packet 0 -m recent --name ${lists[0]} --mask 255.255.255.255 --rsource --set -j DNAT --to-destination ${targets[0]}`,
      `${match} -m statistic --mode nth --every 4 --packet 0 -m recent --name ${lists[1]} --mask 255.255.255.255 --rsource --set -j DNAT --to-destination ${targets[1]}`,
      `${match} -m recent --name ${lists[2]} --mask 255.255.255.255 --rsource --set -j DNAT --to-destination ${targets[2]}`
    ])
    // the affinity checks take no share: the spread is unchanged
    expect(simulateNth(rules, 1000)).toEqual(new Map([[targets[0], 200], [targets[1], 200], [targets[2], 600]]))
    expect(buildRules([{ ...s, affinitySeconds: 0 }], OPTS).text).not.toContain('recent')
  })

  it('names recent lists stably, distinctly and within 28 characters', () => {
    const names = new Set<string>()
    for (let i = 0; i < 2000; i++) {
      for (const proto of ['TCP', 'UDP'] as const) {
        const n = affinityListName(P, `ns${i % 7}/svc-${i}`, 80 + (i % 3), proto, `10.0.${i >> 8}.${i & 255}:80`)
        expect(n.length).toBeLessThanOrEqual(MAX_CHAIN_LEN)
        expect(n).toMatch(/^EDGEMESH-A[A-Z2-7]{16}$/)
        names.add(n)
      }
    }
    expect(names.size).toBe(4000)
    expect(affinityListName(P, 'default/session', 8443, 'TCP', '10.244.1.4:8443')).toBe('EDGEMESH-ALXJITN5K6EO6SH5R')
    expect(affinityListName('A_LONG_PREFIX_16', 'default/session', 8443, 'TCP', '10.244.1.4:8443')).toBe('A_LONG_PREFIX_16-ALXJITN5K6E') // shorter hash when the prefix is long
  })
})

describe('buildRules: hairpin masquerade', () => {
  const PEERS: ProxyServicePort = {
    key: 'default/peers', clusterIP: '10.96.0.40', port: 7000, protocol: 'TCP', balance: 'round-robin',
    direct: ['10.244.1.6:7000', '10.244.1.5:7001', '10.244.1.5:7000'], agentSlots: 1, agentTarget: '169.254.96.16:40126'
  }

  it('marks connections from each direct endpoint IP (once per IP, never the agent) and masquerades marked ones', () => {
    expect(buildRules([PEERS], OPTS).text).toBe(`*nat
:EDGEMESH-SERVICES - [0:0]
:EDGEMESH-POSTROUTING - [0:0]
:EDGEMESH-B040 - [0:0]
-A EDGEMESH-SERVICES -d 0.0.0.40/0.0.0.255 -m comment --comment "edgemesh ClusterIPs x.x.x.40" -j EDGEMESH-B040
-A EDGEMESH-POSTROUTING -m mark --mark 0x200000/0x200000 -j MASQUERADE
-A EDGEMESH-B040 -s 10.244.1.5/32 -d 10.96.0.40/32 -p tcp -m tcp --dport 7000 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B040 -s 10.244.1.6/32 -d 10.96.0.40/32 -p tcp -m tcp --dport 7000 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B040 -d 10.96.0.40/32 -p tcp -m tcp --dport 7000 -m statistic --mode nth --every 4 --packet 0 -j DNAT --to-destination 10.244.1.5:7000
-A EDGEMESH-B040 -d 10.96.0.40/32 -p tcp -m tcp --dport 7000 -m statistic --mode nth --every 3 --packet 0 -j DNAT --to-destination 10.244.1.5:7001
-A EDGEMESH-B040 -d 10.96.0.40/32 -p tcp -m tcp --dport 7000 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.244.1.6:7000
-A EDGEMESH-B040 -d 10.96.0.40/32 -p tcp -m tcp --dport 7000 -j DNAT --to-destination 169.254.96.16:40126
COMMIT
`)
    // the agent's share alone: nothing to mark (the agent dials from the node)
    const agentOnly = buildRules([{ ...PEERS, direct: [] }], OPTS)
    expect(agentOnly.text).not.toContain('-j MARK')
    expect(agentOnly.text).toContain('-A EDGEMESH-POSTROUTING -m mark --mark 0x200000/0x200000 -j MASQUERADE\n')
  })

  it('puts every service port\'s marks before its DNAT rules (affinity checks included), one per endpoint IP', () => {
    const text = buildRules(SET, OPTS).text
    const lines = text.split('\n')
    for (const s of SET.filter((x) => x !== EMPTY)) {
      const marks = markLines(text, s)
      const dnats = portLines(text, s)
      expect(marks.map((l) => /-s (\S+)\/32 /.exec(l)![1]).sort()).toEqual([...new Set(s.direct.map((e) => e.split(':')[0]))].sort())
      expect(Math.max(...marks.map((l) => lines.indexOf(l))), s.key).toBeLessThan(Math.min(...dnats.map((l) => lines.indexOf(l))))
      // contiguous: marks, then the DNATs of the same port
      expect(lines.slice(lines.indexOf(marks[0]!), lines.indexOf(marks[0]!) + marks.length + dnats.length)).toEqual([...marks, ...dnats])
    }
    // the marks take no share: the spread is the same as without hairpin
    expect(portLines(text, WEB)).toEqual(portLines(buildRules(SET, { ...OPTS, hairpin: false }).text, WEB))
    expect(simulateNth(portLines(text, WEB), 300)).toEqual(new Map([['10.244.1.2:8080', 100], ['10.244.1.3:8080', 100], ['10.244.2.5:8080', 100]]))
  })

  it('hairpin: false emits no marks and an empty POSTROUTING chain (still declared, so the hook has a target)', () => {
    const off = buildRules(SET, { ...OPTS, hairpin: false })
    expect(off.text).toBe(GOLDEN_NO_HAIRPIN)
    expect(off.text).toContain(':EDGEMESH-POSTROUTING - [0:0]\n')
    expect(off.chains).toEqual(buildRules(SET, OPTS).chains)
    // the per-port memo keeps the two apart
    expect(buildRules(SET, OPTS).text).toBe(GOLDEN)
    expect(buildRules(SET, { ...OPTS, hairpin: false }).text).toBe(GOLDEN_NO_HAIRPIN)
  })
})

describe('buildRules: incremental sync', () => {
  const full = buildRules(SET, OPTS)
  const sync = (services: ProxyServicePort[], previous: RuleState = full.state): ReturnType<typeof buildRules> =>
    buildRules(services, { ...OPTS, previous })

  it('yields no payload when nothing changed', () => {
    const r = sync(SET.map((s) => ({ ...s, direct: [...s.direct].reverse() })))
    expect(r.text).toBe('')
    expect(r.written).toEqual([])
    expect(r.deleted).toEqual([])
    expect(r.chains).toEqual(full.chains)
    expect(r.state.buckets).toEqual(full.state.buckets)
    // extra rules still need a payload
    expect(buildRules(SET, { ...OPTS, previous: full.state, extraRules: jumpRules(P) }).text).toBe(`*nat\n${jumpRules(P).join('\n')}\nCOMMIT\n`)
    // POSTROUTING is part of the layout: kept, not rewritten, not deleted
    const again = buildRules(SET, { ...OPTS, previous: full.state, existingChains: full.chains })
    expect(again.text).toBe('')
    expect(again.chains).toContain('EDGEMESH-POSTROUTING')
  })

  it('rewrites POSTROUTING only when it is missing or the hairpin option changed', () => {
    const missing = buildRules(SET, { ...OPTS, previous: full.state, existingChains: full.chains.filter((c) => c !== 'EDGEMESH-POSTROUTING') })
    expect(missing.written).toEqual(['EDGEMESH-POSTROUTING'])
    expect(missing.deleted).toEqual([])
    expect(missing.text).toBe('*nat\n:EDGEMESH-POSTROUTING - [0:0]\n-A EDGEMESH-POSTROUTING -m mark --mark 0x200000/0x200000 -j MASQUERADE\nCOMMIT\n')

    // turned off: the masquerade and every bucket's marks go; SERVICES stays (same buckets)
    const off = buildRules(SET, { ...OPTS, hairpin: false, previous: full.state })
    expect(off.written).toEqual(['EDGEMESH-POSTROUTING', 'EDGEMESH-B010', 'EDGEMESH-B011', 'EDGEMESH-B020', 'EDGEMESH-B053'])
    const kernel = model(GOLDEN)
    applyRestore(kernel, off.text)
    expect(sortedModel(kernel)).toEqual(sortedModel(model(GOLDEN_NO_HAIRPIN)))
    expect(kernel.get('EDGEMESH-POSTROUTING')).toEqual([])
    expect(buildRules(SET, { ...OPTS, hairpin: false, previous: off.state }).text).toBe('')
    // and back on
    const on = buildRules(SET, { ...OPTS, previous: off.state })
    applyRestore(kernel, on.text)
    expect(sortedModel(kernel)).toEqual(sortedModel(model(GOLDEN)))
  })

  it('rewrites exactly the one bucket whose endpoints changed', () => {
    const r = sync(SET.map((s) => s === DNS ? { ...s, direct: ['10.244.1.9:53', '10.244.3.9:53'] } : s))
    expect(r.written).toEqual(['EDGEMESH-B053'])
    expect(r.deleted).toEqual([])
    expect(r.text).toBe(`*nat
:EDGEMESH-B053 - [0:0]
-A EDGEMESH-B053 -s 10.244.1.9/32 -d 10.96.0.53/32 -p udp -m udp --dport 53 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B053 -s 10.244.3.9/32 -d 10.96.0.53/32 -p udp -m udp --dport 53 -j MARK --set-xmark 0x200000/0x200000
-A EDGEMESH-B053 -d 10.96.0.53/32 -p udp -m udp --dport 53 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.244.1.9:53
-A EDGEMESH-B053 -d 10.96.0.53/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.244.3.9:53
COMMIT
`)
  })

  it('deletes a bucket that became empty and rewrites SERVICES only when the bucket set changes', () => {
    const gone = sync(SET.filter((s) => s !== DNS))
    expect(gone.written).toEqual(['EDGEMESH-SERVICES'])
    expect(gone.deleted).toEqual(['EDGEMESH-B053'])
    expect(gone.text).toContain(':EDGEMESH-B053 - [0:0]\n')
    expect(gone.text).toContain('-X EDGEMESH-B053\n')
    expect(gone.text).not.toContain('-A EDGEMESH-B')
    expect(gone.text).not.toContain('0.0.0.53/')

    // the same bucket set: SERVICES is left alone even though a bucket's rules changed
    const moved = sync(SET.map((s) => s === WEB ? { ...s, clusterIP: '10.96.5.20' } : s))
    expect(moved.written).toEqual(['EDGEMESH-B010', 'EDGEMESH-B020'])
    // a new bucket
    const added = sync([...SET, { ...WEB, key: 'default/new', clusterIP: '10.96.0.77' }])
    expect(added.written).toEqual(['EDGEMESH-SERVICES', 'EDGEMESH-B077'])
    expect(added.text.split('\n').filter((l) => l.startsWith('-A EDGEMESH-SERVICES'))).toHaveLength(5)
  })

  it('turns a full sync into the next state exactly, over many random changes', () => {
    let seed = 12345 // a small deterministic PRNG (mulberry32)
    const rand = (n: number): number => {
      seed = (seed + 0x6D2B79F5) | 0
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n)
    }
    let services: ProxyServicePort[] = Array.from({ length: 60 }, (_, i) => ({
      key: `ns/svc-${i}`, clusterIP: `10.96.${rand(4)}.${rand(12)}`, port: 80 + rand(3), protocol: rand(2) === 0 ? 'TCP' : 'UDP',
      balance: rand(2) === 0 ? 'round-robin' : 'random', direct: [`10.1.0.${rand(250) + 1}:80`], agentSlots: rand(3), agentTarget: '169.254.96.16:40000'
    }))
    let last = buildRules(services, OPTS)
    const kernel = model(last.text)
    let incrementalWrites = 0
    for (let round = 0; round < 100; round++) {
      const hairpin = Math.floor(round / 10) % 3 !== 2 // off for rounds 20-29, 50-59, 80-89
      services = services.map((s) => {
        switch (rand(12)) {
          case 0: return { ...s, direct: [...s.direct, `10.1.1.${rand(250) + 1}:80`] }
          case 1: return { ...s, direct: s.direct.slice(1) }
          case 2: return { ...s, clusterIP: `10.96.${rand(4)}.${rand(12)}` }
          case 3: return { ...s, agentSlots: rand(3) }
          case 4: return { ...s, affinitySeconds: rand(2) * 60 }
          default: return s
        }
      })
      const next = buildRules(services, { ...OPTS, hairpin, previous: last.state, existingChains: round % 10 === 0 ? kernel.keys() : undefined })
      applyRestore(kernel, next.text)
      incrementalWrites += next.written.length
      const fresh = buildRules(services, { ...OPTS, hairpin })
      expect(sortedModel(kernel)).toEqual(sortedModel(model(fresh.text)))
      expect(next.chains).toEqual(fresh.chains)
      last = next
    }
    expect(incrementalWrites).toBeGreaterThan(0)
  })

  it('writes a layout chain that is missing from existingChains even when unchanged', () => {
    const r = buildRules(SET, { ...OPTS, previous: full.state, existingChains: full.chains.filter((c) => c !== 'EDGEMESH-B020') })
    expect(r.written).toEqual(['EDGEMESH-B020'])
    const r2 = buildRules(SET, { ...OPTS, previous: full.state, existingChains: full.chains.filter((c) => c !== 'EDGEMESH-SERVICES') })
    expect(r2.written).toEqual(['EDGEMESH-SERVICES'])
    const r3 = buildRules(SET, { ...OPTS, previous: full.state, existingChains: full.chains.filter((c) => c !== 'EDGEMESH-POSTROUTING') })
    expect(r3.written).toEqual(['EDGEMESH-POSTROUTING'])
  })

  it('ignores a previous state of another prefix (full sync)', () => {
    const other = buildRules(SET, { chainPrefix: 'OTHER' })
    expect(buildRules(SET, { ...OPTS, previous: other.state }).text).toBe(GOLDEN)
  })
})

describe('buildRules: stale chains', () => {
  it('flushes and deletes chains of the old layout parsed from iptables-save, in both modes', () => {
    const existing = parseChains(SAVE_KUBE_FIRST, P)
    expect(existing).toEqual(['EDGEMESH-POSTROUTING', 'EDGEMESH-SEP-STALESTALESTALE', 'EDGEMESH-SERVICES', 'EDGEMESH-SVC-CZMAQ2PQVC6KCDZ'])
    expect(parseChains(SAVE_KUBE_FIRST, P, 'filter')).toEqual(['EDGEMESH-REJECT'])
    const r = buildRules(SET, { ...OPTS, existingChains: existing })
    expect(r.deleted).toEqual(['EDGEMESH-SEP-STALESTALESTALE', 'EDGEMESH-SVC-CZMAQ2PQVC6KCDZ'])
    const lines = r.text.split('\n')
    const decl = lines.indexOf(':EDGEMESH-SEP-STALESTALESTALE - [0:0]')
    expect(decl).toBeGreaterThan(0)
    expect(lines.indexOf('-X EDGEMESH-SEP-STALESTALESTALE')).toBeGreaterThan(decl)
    expect(lines.indexOf('-X EDGEMESH-SVC-CZMAQ2PQVC6KCDZ')).toBeGreaterThan(decl)
    expect(lines.at(-2)).toBe('COMMIT')
    expect(r.text).not.toContain('-X EDGEMESH-SERVICES')
    expect(r.text).not.toContain('-X EDGEMESH-POSTROUTING') // part of the layout, never stale
    // with nothing stale the text equals the golden payload
    expect(buildRules(SET, { ...OPTS, existingChains: r.chains }).text).toBe(GOLDEN)

    // incremental, buckets unchanged: the old SERVICES may still jump to the stale chains, so it is rewritten too
    const inc = buildRules(SET, { ...OPTS, previous: buildRules(SET, OPTS).state, existingChains: [...existing, ...r.chains] })
    expect(inc.deleted).toEqual(r.deleted)
    expect(inc.written).toEqual(['EDGEMESH-SERVICES'])
    const kernel = model(GOLDEN)
    for (const c of r.deleted) kernel.set(c, [])
    kernel.get('EDGEMESH-SERVICES')!.push('-A EDGEMESH-SERVICES -j EDGEMESH-SVC-CZMAQ2PQVC6KCDZ')
    applyRestore(kernel, inc.text)
    expect(sortedModel(kernel)).toEqual(sortedModel(model(GOLDEN)))
  })
})

describe('hooks', () => {
  it('hooks SERVICES at the top of PREROUTING and OUTPUT, and POSTROUTING at the top of POSTROUTING', () => {
    expect(jumpRules(P)).toEqual([
      '-I PREROUTING 1 -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES',
      '-I OUTPUT 1 -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES',
      '-I POSTROUTING 1 -m comment --comment "edgemesh postrouting rules" -j EDGEMESH-POSTROUTING'
    ])
  })

  it('hookFixRules: repairs from an `iptables -t nat -S <hook>` listing', () => {
    const ours = '-A PREROUTING -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES'
    const kube = '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    expect(hookFixRules('PREROUTING', `-P PREROUTING ACCEPT\n${ours}\n${kube}\n`, P)).toEqual([])
    expect(hookFixRules('PREROUTING', '-P PREROUTING ACCEPT\n', P)).toEqual([jumpRules(P)[0]])
    expect(hookFixRules('PREROUTING', '', P)).toEqual([jumpRules(P)[0]])
    expect(hookFixRules('PREROUTING', `-P PREROUTING ACCEPT\n${kube}\n${ours}\n-A PREROUTING -j EDGEMESH-SERVICES\n`, P)).toEqual([
      '-D PREROUTING -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES',
      '-D PREROUTING -j EDGEMESH-SERVICES',
      jumpRules(P)[0]
    ])
    // iptables -S -v counters are dropped, other chains' lines ignored
    expect(hookFixRules('OUTPUT', '-P OUTPUT ACCEPT -c 0 0\n-A OUTPUT -j KUBE-SERVICES -c 5 300\n-A OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES -c 1 60\n-A PREROUTING -j EDGEMESH-SERVICES\n', P)).toEqual([
      '-D OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES',
      jumpRules(P)[1]
    ])
    expect(() => hookFixRules('INPUT' as 'OUTPUT', '', P)).toThrow(/not a hook chain/)
  })

  it('hookFixRules: repairs POSTROUTING from an `iptables -t nat -S POSTROUTING` listing', () => {
    const ours = '-A POSTROUTING -m comment --comment "edgemesh postrouting rules" -j EDGEMESH-POSTROUTING'
    const kube = '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'
    const cni = '-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE'
    expect(hookFixRules('POSTROUTING', `-P POSTROUTING ACCEPT\n${ours}\n${kube}\n${cni}\n`, P)).toEqual([])
    expect(hookFixRules('POSTROUTING', '-P POSTROUTING ACCEPT\n', P)).toEqual([jumpRules(P)[2]])
    expect(hookFixRules('POSTROUTING', '', P)).toEqual([jumpRules(P)[2]])
    // kube-proxy restarted and inserted its hook first; a stray copy of ours further down (-v counters)
    expect(hookFixRules('POSTROUTING', `-P POSTROUTING ACCEPT -c 0 0\n${kube} -c 9 540\n${ours} -c 2 120\n${cni}\n-A POSTROUTING -j EDGEMESH-POSTROUTING\n`, P)).toEqual([
      '-D POSTROUTING -m comment --comment "edgemesh postrouting rules" -j EDGEMESH-POSTROUTING',
      '-D POSTROUTING -j EDGEMESH-POSTROUTING',
      jumpRules(P)[2]
    ])
    // SERVICES is not the POSTROUTING hook's target, nor ours the PREROUTING one's
    expect(hookFixRules('POSTROUTING', '-A POSTROUTING -j EDGEMESH-SERVICES\n', P)).toEqual([jumpRules(P)[2]])
    expect(hookFixRules('PREROUTING', '-A PREROUTING -j EDGEMESH-POSTROUTING\n', P)).toEqual([jumpRules(P)[0]])
  })

  it('detects a missing or shadowed jump in iptables-save text', () => {
    expect(needsJumpFix(SAVE_OURS_FIRST, P)).toBe(false)
    expect(needsJumpFix(SAVE_KUBE_FIRST, P)).toBe(true)
    expect(needsJumpFix(SAVE_MISSING, P)).toBe(true)
    expect(needsJumpFix('', P)).toBe(true)
    // ours first in PREROUTING only
    expect(needsJumpFix(SAVE_OURS_FIRST.replace(/-A OUTPUT -m comment --comment "edgemesh[^\n]*\n/, ''), P)).toBe(true)
    // POSTROUTING's hook missing, or behind another rule
    expect(needsJumpFix(SAVE_OURS_FIRST.replace(/\[40:2400\] -A POSTROUTING [^\n]*\n/, ''), P)).toBe(true)
    expect(needsJumpFix(SAVE_OURS_FIRST.replace(/(\[40:2400\] -A POSTROUTING [^\n]*\n)(-A POSTROUTING [^\n]*\n)/, '$2$1'), P)).toBe(true)
  })

  it('jumpFixRules: repairs from iptables-save text by deleting the saved jumps and inserting at position 1', () => {
    expect(jumpFixRules(SAVE_OURS_FIRST, P)).toEqual([])
    expect(jumpFixRules(SAVE_MISSING, P)).toEqual(jumpRules(P))
    expect(jumpFixRules(SAVE_KUBE_FIRST, P)).toEqual([
      '-D PREROUTING -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES',
      jumpRules(P)[0],
      '-D OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES',
      jumpRules(P)[1],
      '-D POSTROUTING -m comment --comment "edgemesh postrouting rules" -j EDGEMESH-POSTROUTING',
      jumpRules(P)[2]
    ])
    const r = buildRules(SET, { ...OPTS, extraRules: jumpFixRules(SAVE_MISSING, P) })
    expect(r.text.endsWith(`${jumpRules(P).join('\n')}\nCOMMIT\n`)).toBe(true)
  })
})

describe('cleanupRules', () => {
  it('removes our jumps and chains from every table', () => {
    expect(cleanupRules(SAVE_KUBE_FIRST, P)).toBe(`*filter
:EDGEMESH-REJECT - [0:0]
-D INPUT -j EDGEMESH-REJECT
-X EDGEMESH-REJECT
COMMIT
*nat
:EDGEMESH-POSTROUTING - [0:0]
:EDGEMESH-SEP-STALESTALESTALE - [0:0]
:EDGEMESH-SERVICES - [0:0]
:EDGEMESH-SVC-CZMAQ2PQVC6KCDZ - [0:0]
-D PREROUTING -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES
-D OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES
-D POSTROUTING -m comment --comment "edgemesh postrouting rules" -j EDGEMESH-POSTROUTING
-X EDGEMESH-POSTROUTING
-X EDGEMESH-SEP-STALESTALESTALE
-X EDGEMESH-SERVICES
-X EDGEMESH-SVC-CZMAQ2PQVC6KCDZ
COMMIT
`)
  })

  it('removes the bucket layout, the POSTROUTING chain and all three hooks', () => {
    // what iptables-save prints after the golden payload and jumpRules
    const hooks = jumpRules(P).map((r) => r.replace(/^-I (\S+) 1 /, '-A $1 '))
    const save = `*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n${GOLDEN.split('\n').filter((l) => l.startsWith(':')).join('\n')}\n` +
      `${hooks.join('\n')}\n-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE\n${GOLDEN.split('\n').filter((l) => l.startsWith('-A')).join('\n')}\nCOMMIT\n`
    const text = cleanupRules(save, P)
    const lines = text.split('\n')
    expect(lines.filter((l) => l.startsWith('-X '))).toEqual(['-X EDGEMESH-B010', '-X EDGEMESH-B011', '-X EDGEMESH-B020', '-X EDGEMESH-B053', '-X EDGEMESH-POSTROUTING', '-X EDGEMESH-SERVICES'])
    expect(lines.filter((l) => l.startsWith('-D '))).toEqual([
      '-D PREROUTING -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES',
      '-D OUTPUT -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES',
      '-D POSTROUTING -m comment --comment "edgemesh postrouting rules" -j EDGEMESH-POSTROUTING'
    ])
    expect(text).not.toContain('MASQUERADE') // the CNI's rule is not ours
    // every declared chain of ours is deleted, after the hooks that reference it
    const model = new Map<string, string[]>()
    for (const c of lines.filter((l) => l.startsWith(':'))) model.set(c.slice(1).split(' ')[0]!, [])
    expect([...model.keys()].sort()).toEqual(lines.filter((l) => l.startsWith('-X ')).map((l) => l.slice(3)).sort())
    expect(lines.findIndex((l) => l.startsWith('-X '))).toBeGreaterThan(lines.findLastIndex((l) => l.startsWith('-D ')))
  })

  it('is empty when nothing of ours exists', () => {
    expect(cleanupRules(SAVE_MISSING, P)).toBe('')
    expect(cleanupRules('', P)).toBe('')
  })
})

describe('scale', () => {
  it('generates 10,000 service ports x 3 direct endpoints quickly, and an incremental sync of one change', () => {
    const make = (): ProxyServicePort[] => Array.from({ length: 10_000 }, (_, i) => ({
      key: `ns-${i % 50}/svc-${i}`, clusterIP: `10.96.${i >> 8}.${i & 255}`, port: 80, protocol: i % 10 === 0 ? 'UDP' : 'TCP',
      balance: 'round-robin', agentSlots: 0, direct: [0, 1, 2].map((e) => `10.244.${(i >> 8) & 255}.${(i * 3 + e) & 255}:8080`)
    }))
    const time = <T>(f: () => T): { r: T, ms: number } => {
      const t0 = performance.now()
      const r = f()
      return { r, ms: performance.now() - t0 }
    }
    // fresh input objects every time, like an agent rebuilding its view on each sync (made before
    // the clock starts)
    const timed = (services: ProxyServicePort[], previous?: RuleState): { r: ReturnType<typeof buildRules>, ms: number } =>
      time(() => buildRules(services, { ...OPTS, previous }))
    const cold = timed(make()) // JIT warm-up, empty per-port memo
    let warm = timed(make())
    for (let i = 0; i < 7; i++) { const t = timed(make()); if (t.ms < warm.ms) warm = t }
    const best = (f: () => ReturnType<typeof timed>): ReturnType<typeof timed> =>
      [f(), f(), f()].reduce((x, y) => y.ms < x.ms ? y : x)
    const unchanged = best(() => timed(make(), warm.r.state))
    const oneChange = best(() => {
      const changed = make()
      changed[4242] = { ...changed[4242]!, direct: ['10.244.99.1:8080'] }
      return timed(changed, warm.r.state)
    })
    const r = warm.r
    console.log(`proxy rules: 10,000 service ports x 3 endpoints (hairpin marks on) -> ${r.chains.length} chains, ${(r.text.length / 1e6).toFixed(1)} MB; ` +
      `full cold ${cold.ms.toFixed(1)} ms, full warm ${warm.ms.toFixed(1)} ms (best of 8); incremental (best of 3): unchanged ${unchanged.ms.toFixed(1)} ms, ` +
      `one endpoint ${oneChange.ms.toFixed(1)} ms (${oneChange.r.text.length} bytes)`)
    expect(r.text).toBe(cold.r.text)
    expect(r.chains).toHaveLength(2 + 256)
    // SERVICES, the masquerade, and per service port 3 hairpin marks + 3 DNATs
    expect(r.text.split('\n').filter((l) => l.startsWith('-A '))).toHaveLength(256 + 1 + 60_000)
    expect(r.skipped).toEqual([])
    expect(unchanged.r.text).toBe('')
    expect(oneChange.r.written).toEqual([bucketChainName(P, 4242 & 255)])
  })
})
