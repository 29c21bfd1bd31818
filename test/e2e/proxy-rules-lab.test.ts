// The proxy's generated iptables rules against the real iptables-restore and kernel, inside a
// lab namespace: accepted as written and found again in iptables-save (the bucket mask form
// included), the hook repaired to the top from `iptables -S` when another chain got in first,
// chains of the old per-service layout removed, an incremental restore leaving exactly what a full
// one would, the kernel's nth counters and recent lists doing what the unit tests simulate,
// cleanup leaving nothing; and what 10,000 service ports cost (build, restore, one-endpoint change).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import {
  bucketChainName, buildRules, cleanupRules, hookFixRules, jumpRules, parseChains,
  type HookChain, type ProxyServicePort
} from '../../agent/proxy/rules.ts'

const PREFIX = 'EDGEMESH'
const HOST = 'a1'
let lab: Lab

async function run (argv: string[], input?: string): Promise<string> {
  const r = await lab.exec(HOST, argv, { timeoutMs: 120_000, ...(input === undefined ? {} : { input }) })
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr}\n${(input ?? '').slice(0, 2000)}`)
  return r.stdout
}
async function restore (text: string): Promise<void> { await run(['iptables-restore', '--noflush'], text) }
async function save (): Promise<string> { return await run(['iptables-save', '-t', 'nat']) }
async function listHook (hook: HookChain): Promise<string> { return await run(['iptables', '-t', 'nat', '-S', hook]) }
async function hookFixes (): Promise<string[]> {
  return [...hookFixRules('PREROUTING', await listHook('PREROUTING'), PREFIX), ...hookFixRules('OUTPUT', await listHook('OUTPUT'), PREFIX)]
}
/** Our chain declarations and rules as iptables-save prints them (chains sorted, rules in order). */
const ours = (saveText: string): string[] => saveText.split('\n').filter((l) => l.startsWith(`:${PREFIX}-`) || l.startsWith(`-A ${PREFIX}-`))
async function cleanup (): Promise<void> {
  const text = cleanupRules(await save(), PREFIX)
  if (text !== '') await restore(text)
  expect(parseChains(await save(), PREFIX)).toEqual([])
}

/** n service ports with 3 direct endpoints each (round robin), ClusterIPs spread over all buckets. */
const services = (n: number, endpoints = 3): ProxyServicePort[] => Array.from({ length: n }, (_, i) => ({
  key: `ns${i % 20}/svc-${i}`, clusterIP: `10.96.${i >> 8}.${i & 255}`, port: 80, protocol: 'TCP', balance: 'round-robin', agentSlots: 0,
  direct: Array.from({ length: endpoints }, (_, j) => `10.1.${j}.${(i % 250) + 1}:8080`)
}))
/** A mix of every feature: random, agent shares, affinity, UDP. */
const mixed = (n: number): ProxyServicePort[] => services(n, 2).map((s, i) => ({
  ...s,
  protocol: i % 5 === 0 ? 'UDP' : 'TCP',
  balance: i % 3 === 0 ? 'random' : 'round-robin',
  agentSlots: i % 4,
  agentTarget: `169.254.96.16:${40000 + i}`,
  ...(i % 7 === 0 ? { affinitySeconds: 300 } : {})
}))

beforeAll(async () => { lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }] }) })
afterAll(async () => { await lab?.teardown() })

describe('proxy iptables rules in a real kernel (lab namespace)', () => {
  it('are accepted, found again, hooked first over another chain; old-layout chains go; cleanup removes everything', async () => {
    // an older agent's per-service layout, hooked, and kube-proxy's chain in front of it
    await restore([
      '*nat',
      ':EDGEMESH-SERVICES - [0:0]', ':EDGEMESH-SVC-OLDOLDOLDOLDOLD - [0:0]', ':EDGEMESH-SEP-OLDOLDOLDOLDOLD - [0:0]', ':KUBE-SERVICES - [0:0]',
      '-A EDGEMESH-SERVICES -d 10.96.0.99/32 -p tcp -m tcp --dport 80 -m comment --comment "default/old:80" -j EDGEMESH-SVC-OLDOLDOLDOLDOLD',
      '-A EDGEMESH-SVC-OLDOLDOLDOLDOLD -m comment --comment "default/old:80 -> 10.244.9.9:80" -j EDGEMESH-SEP-OLDOLDOLDOLDOLD',
      '-A EDGEMESH-SEP-OLDOLDOLDOLDOLD -p tcp -m comment --comment "default/old:80" -m tcp -j DNAT --to-destination 10.244.9.9:80',
      ...jumpRules(PREFIX),
      '-I PREROUTING 1 -j KUBE-SERVICES', '-I OUTPUT 1 -j KUBE-SERVICES',
      'COMMIT', ''
    ].join('\n'))
    let text = await save()
    expect(parseChains(text, PREFIX)).toEqual(['EDGEMESH-SEP-OLDOLDOLDOLDOLD', 'EDGEMESH-SERVICES', 'EDGEMESH-SVC-OLDOLDOLDOLDOLD'])
    const fixes = await hookFixes()
    expect(fixes).toHaveLength(4) // a delete and an insert per hook

    const input = mixed(40)
    const first = buildRules(input, { chainPrefix: PREFIX, existingChains: parseChains(text, PREFIX), extraRules: fixes })
    expect(first.skipped).toEqual([])
    expect(first.deleted).toEqual(['EDGEMESH-SEP-OLDOLDOLDOLDOLD', 'EDGEMESH-SVC-OLDOLDOLDOLDOLD'])
    await restore(first.text)
    text = await save()
    expect(parseChains(text, PREFIX)).toEqual([...first.chains].sort())
    // the non-contiguous bucket mask comes back as written
    expect(text).toContain('-A EDGEMESH-SERVICES -d 0.0.0.5/0.0.0.255 -m comment --comment "edgemesh ClusterIPs x.x.x.5" -j EDGEMESH-B005\n')
    expect(text).toMatch(/-A EDGEMESH-B\d{3} -d 10\.96\.0\.\d+\/32 -p udp -m udp --dport 80 -m statistic --mode nth --every \d+ --packet 0 -j DNAT --to-destination /)
    expect(text).toMatch(/--probability 0\.333333333\d* -j DNAT --to-destination /)
    expect(text).toMatch(/-m recent --update --seconds 300 --reap --name EDGEMESH-A[A-Z2-7]{16} --mask 255\.255\.255\.255 --rsource -j DNAT /)
    expect(text).toMatch(/-m statistic --mode nth --every \d+ --packet 0 -m recent --set --name EDGEMESH-A[A-Z2-7]{16} --mask 255\.255\.255\.255 --rsource -j DNAT /)
    expect(text).not.toContain('OLDOLD')
    for (const hook of ['PREROUTING', 'OUTPUT'] as const) {
      const listing = await listHook(hook)
      expect(listing.split('\n').find((l) => l.startsWith(`-A ${hook} `))).toBe(`-A ${hook} -m comment --comment "edgemesh service portals" -j EDGEMESH-SERVICES`)
      expect(listing.split('\n').filter((l) => l.endsWith('-j EDGEMESH-SERVICES'))).toHaveLength(1)
      expect(hookFixRules(hook, listing, PREFIX)).toEqual([])
    }

    await cleanup()
    text = await save()
    expect(text).not.toContain('EDGEMESH')
    expect(text).toContain('KUBE-SERVICES') // not ours: left alone
  })

  it('an incremental restore on top of a full one leaves what a full build of the new state leaves', async () => {
    const before = mixed(600)
    const full = buildRules(before, { chainPrefix: PREFIX })
    await restore(full.text)
    expect(buildRules(before, { chainPrefix: PREFIX, previous: full.state }).text).toBe('')

    const after = before
      .filter((s) => !s.clusterIP.endsWith('.7')) // bucket 7 empties
      .map((s, i) => i % 50 === 0 ? { ...s, direct: [...s.direct, '10.2.0.1:8080'] } : i % 77 === 0 ? { ...s, affinitySeconds: 60 } : s)
      .concat([{ ...before[1]!, key: 'ns/new', clusterIP: '10.97.0.7' }]) // and refills with another Service
      .concat([{ ...before[1]!, key: 'ns/other', clusterIP: '10.97.0.3' }])
    const inc = buildRules(after, { chainPrefix: PREFIX, previous: full.state, existingChains: parseChains(await save(), PREFIX) })
    expect(inc.written.length).toBeGreaterThan(0)
    expect(inc.written.length).toBeLessThan(inc.chains.length)
    await restore(inc.text)
    const incremental = ours(await save())

    await cleanup()
    await restore(buildRules(after, { chainPrefix: PREFIX }).text)
    expect(incremental).toEqual(ours(await save()))
    expect(incremental.length).toBeGreaterThan(1000)

    // and a bucket that empties for good is deleted
    const gone = after.filter((s) => !s.clusterIP.endsWith('.9'))
    const del = buildRules(gone, { chainPrefix: PREFIX, previous: inc.state })
    expect(del.deleted).toEqual([bucketChainName(PREFIX, 9)])
    await restore(del.text)
    expect(parseChains(await save(), PREFIX)).toEqual([...del.chains].sort())
    await cleanup()
  })

  it('the kernel spreads new connections exactly by the nth rules and keeps a client on its target', async () => {
    const spread: ProxyServicePort = {
      key: 'lab/spread', clusterIP: '10.96.0.10', port: 5000, protocol: 'UDP', balance: 'round-robin',
      direct: ['10.244.0.1:5000', '10.244.0.2:5000'], agentSlots: 3, agentTarget: '169.254.96.16:40123'
    }
    const sticky: ProxyServicePort = {
      key: 'lab/sticky', clusterIP: '10.96.0.11', port: 5001, protocol: 'UDP', balance: 'round-robin',
      direct: ['10.244.0.3:5001'], agentSlots: 1, agentTarget: '169.254.96.16:40124', affinitySeconds: 600
    }
    const r = buildRules([spread, sticky], { chainPrefix: PREFIX })
    await restore(r.text)
    await restore(['*nat', ...hookFixRules('OUTPUT', await listHook('OUTPUT'), PREFIX), 'COMMIT', ''].join('\n'))

    // 50 new UDP flows to each service from one client: 50 sockets open at once, so 50 source ports
    const send = (ip: string, port: number, flows: number): string => `
      const dgram = require('node:dgram'); const socks = []; let sent = 0
      for (let i = 0; i < ${flows}; i++) {
        const s = dgram.createSocket('udp4'); socks.push(s)
        s.send('x', ${port}, '${ip}', (e) => { if (e) { console.error(e); process.exit(1) } if (++sent === ${flows}) process.exit(0) })
      }`
    await run([process.execPath, '-e', send(spread.clusterIP, spread.port, 50)])
    await run([process.execPath, '-e', send(sticky.clusterIP, sticky.port, 20)])

    const counters = new Map<string, number>()
    for (const l of (await run(['iptables-save', '-c', '-t', 'nat'])).split('\n')) {
      const m = /^\[(\d+):\d+\] (-A EDGEMESH-B\d{3} .*)$/.exec(l)
      if (m != null) counters.set(m[2]!.replace(/.*--to-destination /, (m[2]!.includes('--update') ? 'check ' : 'spread ')), Number(m[1]))
    }
    // 2 direct endpoints + 3 agent shares: exactly 1/5 each to the direct ones
    expect(counters.get('spread 10.244.0.1:5000')).toBe(10)
    expect(counters.get('spread 10.244.0.2:5000')).toBe(10)
    expect(counters.get('spread 169.254.96.16:40123')).toBe(30)
    // the first flow is taken by the nth rule (`--packet 0` matches the first packet), which
    // records the client after its pick; every later flow is kept there by its check, and the
    // agent's rule, never chosen, recorded nothing
    expect(counters.get('spread 10.244.0.3:5001')).toBe(1)
    expect(counters.get('spread 169.254.96.16:40124')).toBe(0)
    expect(counters.get('check 10.244.0.3:5001')).toBe(19)
    expect(counters.get('check 169.254.96.16:40124')).toBe(0)
    await cleanup()
  })

  it('10,000 service ports x 3 endpoints: build, iptables-restore, and a one-endpoint incremental sync', async () => {
    const input = services(10_000)
    buildRules(services(10_000), { chainPrefix: 'WARMUP' }) // JIT warm-up (another prefix: not memoized for ours)
    const t0 = performance.now()
    const full = buildRules(input, { chainPrefix: PREFIX })
    const buildMs = performance.now() - t0
    const t1 = performance.now()
    await restore(full.text)
    const restoreMs = performance.now() - t1
    const t2 = performance.now()
    const fixes = await hookFixes()
    const listMs = performance.now() - t2
    await restore(['*nat', ...fixes, 'COMMIT', ''].join('\n'))
    const t3 = performance.now()
    const text = await save()
    const saveMs = performance.now() - t3
    expect(parseChains(text, PREFIX)).toEqual([...full.chains].sort())
    expect(text.split('\n').filter((l) => l.startsWith(`-A ${PREFIX}-`))).toHaveLength(256 + 30_000)

    const changed = input.slice()
    changed[4242] = { ...changed[4242]!, direct: ['10.2.0.1:8080', ...changed[4242]!.direct.slice(1)] }
    const t4 = performance.now()
    const inc = buildRules(changed, { chainPrefix: PREFIX, previous: full.state })
    const incBuildMs = performance.now() - t4
    expect(inc.written).toEqual([bucketChainName(PREFIX, 4242 & 255)])
    const t5 = performance.now()
    await restore(inc.text)
    const incRestoreMs = performance.now() - t5
    const t6 = performance.now()
    const noop = buildRules(changed, { chainPrefix: PREFIX, previous: inc.state })
    const noopMs = performance.now() - t6
    expect(noop.text).toBe('')
    expect(await run(['iptables', '-t', 'nat', '-S', bucketChainName(PREFIX, 4242 & 255)])).toContain('--to-destination 10.2.0.1:8080')

    console.log(`[proxy-rules] 10k service ports x 3 endpoints: ${full.chains.length} chains, ${(full.text.length / 1e6).toFixed(1)} MB; ` +
      `first build ${buildMs.toFixed(0)} ms, iptables-restore ${restoreMs.toFixed(0)} ms; iptables -S of both hooks ${listMs.toFixed(0)} ms, ` +
      `iptables-save ${saveMs.toFixed(0)} ms; one-endpoint change: build ${incBuildMs.toFixed(1)} ms, ` +
      `iptables-restore ${incRestoreMs.toFixed(0)} ms (${inc.text.length} bytes); unchanged sync build ${noopMs.toFixed(1)} ms`)
    await cleanup()
  })
})
