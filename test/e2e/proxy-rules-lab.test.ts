// The proxy's generated iptables rules against the real iptables-restore and kernel, inside a
// lab namespace: accepted as written and found again in iptables-save (the bucket mask form and
// the hairpin marks included), the hooks (PREROUTING, OUTPUT, POSTROUTING) repaired to the top
// from `iptables -S` when another chain got in first,
// chains of the old per-service layout removed, an incremental restore leaving exactly what a full
// one would, the kernel's nth counters and recent lists doing what the unit tests simulate,
// cleanup leaving nothing; and what 10,000 service ports cost (build, restore, one-endpoint change).
// The filter table too: service ports without endpoints refused by REJECT (TCP and UDP, from a pod
// through FORWARD and from the node through OUTPUT), taken over by DNAT in the same restore.
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab, type LabHost } from '../lab/lab.ts'
import {
  bucketChainName, buildRules, buildSyncRules, cleanupRules, filterHookFixRules, filterJumpRules, hookFixRules, jumpRules, parseChains,
  rejectChain, type FilterHookChain, type HookChain, type ProxyServicePort
} from '../../agent/proxy/rules.ts'

const PREFIX = 'EDGEMESH'
const PROBE = join(import.meta.dirname, '../lab/refusal-probe.mjs')
const HOST = 'a1'
let lab: Lab

async function run (argv: string[], input?: string): Promise<string> {
  const r = await lab.exec(HOST, argv, { timeoutMs: 120_000, ...(input === undefined ? {} : { input }) })
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr}\n${(input ?? '').slice(0, 2000)}`)
  return r.stdout
}
async function restore (text: string): Promise<void> { await run(['iptables-restore', '--noflush'], text) }
async function save (): Promise<string> { return await run(['iptables-save', '-t', 'nat']) }
async function saveFilter (): Promise<string> { return await run(['iptables-save', '-t', 'filter']) }
async function listHook (hook: HookChain): Promise<string> { return await run(['iptables', '-t', 'nat', '-S', hook]) }
const HOOKS: HookChain[] = ['PREROUTING', 'OUTPUT', 'POSTROUTING']
async function hookFixes (): Promise<string[]> {
  const fixes: string[] = []
  for (const hook of HOOKS) fixes.push(...hookFixRules(hook, await listHook(hook), PREFIX))
  return fixes
}
/** Our hook of `hook` as `iptables -S` lists it. */
const hookLine = (hook: HookChain): string => jumpRules(PREFIX)[HOOKS.indexOf(hook)]!.replace(/^-I (\S+) 1 /, '-A $1 ')
/** Our chain declarations and rules as iptables-save prints them (chains sorted, rules in order). */
const ours = (saveText: string): string[] => saveText.split('\n').filter((l) => l.startsWith(`:${PREFIX}-`) || l.startsWith(`-A ${PREFIX}-`))
async function cleanup (): Promise<void> {
  const text = cleanupRules((await save()) + (await saveFilter()), PREFIX)
  if (text !== '') await restore(text)
  expect(parseChains(await save(), PREFIX)).toEqual([])
  expect(parseChains(await saveFilter(), PREFIX, 'filter')).toEqual([])
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
    // an older agent's per-service layout, hooked (PREROUTING and OUTPUT only: it had no
    // POSTROUTING chain), and kube-proxy's chains in front of it
    await restore([
      '*nat',
      ':EDGEMESH-SERVICES - [0:0]', ':EDGEMESH-SVC-OLDOLDOLDOLDOLD - [0:0]', ':EDGEMESH-SEP-OLDOLDOLDOLDOLD - [0:0]', ':KUBE-SERVICES - [0:0]', ':KUBE-POSTROUTING - [0:0]',
      '-A EDGEMESH-SERVICES -d 10.96.0.99/32 -p tcp -m tcp --dport 80 -m comment --comment "default/old:80" -j EDGEMESH-SVC-OLDOLDOLDOLDOLD',
      '-A EDGEMESH-SVC-OLDOLDOLDOLDOLD -m comment --comment "default/old:80 -> 10.244.9.9:80" -j EDGEMESH-SEP-OLDOLDOLDOLDOLD',
      '-A EDGEMESH-SEP-OLDOLDOLDOLDOLD -p tcp -m comment --comment "default/old:80" -m tcp -j DNAT --to-destination 10.244.9.9:80',
      '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
      ...jumpRules(PREFIX).filter((r) => !r.startsWith('-I POSTROUTING ')),
      '-I PREROUTING 1 -j KUBE-SERVICES', '-I OUTPUT 1 -j KUBE-SERVICES', '-I POSTROUTING 1 -j KUBE-POSTROUTING',
      'COMMIT', ''
    ].join('\n'))
    let text = await save()
    expect(parseChains(text, PREFIX)).toEqual(['EDGEMESH-SEP-OLDOLDOLDOLDOLD', 'EDGEMESH-SERVICES', 'EDGEMESH-SVC-OLDOLDOLDOLDOLD'])
    const fixes = await hookFixes()
    expect(fixes).toHaveLength(5) // a delete and an insert for PREROUTING and OUTPUT, an insert for POSTROUTING

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
    // the hairpin marks and the masquerade come back exactly as written
    const marks = first.text.split('\n').filter((l) => l.includes(' -j MARK '))
    expect(marks.length).toBeGreaterThan(40)
    for (const l of marks) expect(text).toContain(`${l}\n`)
    expect(text).toContain('-A EDGEMESH-POSTROUTING -m mark --mark 0x200000/0x200000 -j MASQUERADE\n')
    for (const hook of HOOKS) {
      const listing = await listHook(hook)
      expect(listing.split('\n').find((l) => l.startsWith(`-A ${hook} `))).toBe(hookLine(hook))
      expect(listing.split('\n').filter((l) => / -j EDGEMESH-/.test(l))).toHaveLength(1)
      expect(hookFixRules(hook, listing, PREFIX)).toEqual([])
    }
    expect((await listHook('POSTROUTING')).split('\n').filter((l) => l.startsWith('-A '))).toEqual([hookLine('POSTROUTING'), '-A POSTROUTING -j KUBE-POSTROUTING'])

    await cleanup()
    text = await save()
    expect(text).not.toContain('EDGEMESH')
    expect(text).toContain('KUBE-SERVICES') // not ours: left alone
    expect(text).toContain('-A POSTROUTING -j KUBE-POSTROUTING\n')
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

    // hairpin turned off incrementally: what a full build without it leaves
    const off = buildRules(gone, { chainPrefix: PREFIX, hairpin: false, previous: del.state })
    await restore(off.text)
    const incOff = ours(await save())
    expect(incOff.some((l) => l.includes('MARK') || l.includes('MASQUERADE'))).toBe(false)
    expect(incOff).toContain(`:${PREFIX}-POSTROUTING - [0:0]`)
    await cleanup()
    await restore(buildRules(gone, { chainPrefix: PREFIX, hairpin: false }).text)
    expect(incOff).toEqual(ours(await save()))
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

  it('10,000 service ports x 3 endpoints: build, iptables-restore, and a one-endpoint incremental sync (hairpin marks on and off)', async () => {
    const input = services(10_000)
    buildRules(services(10_000), { chainPrefix: 'WARMUP' }) // JIT warm-up (another prefix: not memoized for ours)
    const timed = async <T>(f: () => Promise<T> | T): Promise<{ r: T, ms: number }> => {
      const t = performance.now()
      const r = await f()
      return { r, ms: performance.now() - t }
    }
    const changed = input.slice()
    changed[4242] = { ...changed[4242]!, direct: ['10.2.0.1:8080', ...changed[4242]!.direct.slice(1)] }

    /** full restore into an empty table, the same again over it, then a one-endpoint change */
    const measure = async (hairpin: boolean): Promise<{ bytes: number, build: number, restore: number, resync: number, incBuild: number, incRestore: number, incBytes: number, noop: number }> => {
      const full = await timed(() => buildRules(input, { chainPrefix: PREFIX, hairpin }))
      const restored = await timed(async () => { await restore(full.r.text) })
      const resync = await timed(async () => { await restore(full.r.text) })
      const text = await save()
      expect(parseChains(text, PREFIX)).toEqual([...full.r.chains].sort())
      // SERVICES, per service port 3 DNATs (+ 3 hairpin marks), the masquerade
      expect(text.split('\n').filter((l) => l.startsWith(`-A ${PREFIX}-`))).toHaveLength(256 + (hairpin ? 60_001 : 30_000))
      const inc = await timed(() => buildRules(changed, { chainPrefix: PREFIX, hairpin, previous: full.r.state }))
      expect(inc.r.written).toEqual([bucketChainName(PREFIX, 4242 & 255)])
      const incRestore = await timed(async () => { await restore(inc.r.text) })
      const noop = await timed(() => buildRules(changed, { chainPrefix: PREFIX, hairpin, previous: inc.r.state }))
      expect(noop.r.text).toBe('')
      const bucket = await run(['iptables', '-t', 'nat', '-S', bucketChainName(PREFIX, 4242 & 255)])
      expect(bucket).toContain('--to-destination 10.2.0.1:8080')
      expect(bucket.includes('-s 10.2.0.1/32 -d 10.96.16.146/32 -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x200000/0x200000')).toBe(hairpin)
      await cleanup()
      return { bytes: full.r.text.length, build: full.ms, restore: restored.ms, resync: resync.ms, incBuild: inc.ms, incRestore: incRestore.ms, incBytes: inc.r.text.length, noop: noop.ms }
    }
    const on = await measure(true)
    // the hooks and a save, with the hairpin layout in place
    await restore(buildRules(input, { chainPrefix: PREFIX }).text)
    const list = await timed(hookFixes)
    await restore(['*nat', ...list.r, 'COMMIT', ''].join('\n'))
    expect(await hookFixes()).toEqual([])
    const saved = await timed(save)
    await cleanup()
    const off = await measure(false)

    const fmt = (m: typeof on): string => `${(m.bytes / 1e6).toFixed(1)} MB, first build ${m.build.toFixed(0)} ms, iptables-restore ${m.restore.toFixed(0)} ms, ` +
      `re-sync ${m.resync.toFixed(0)} ms; one-endpoint change: build ${m.incBuild.toFixed(1)} ms, iptables-restore ${m.incRestore.toFixed(0)} ms ` +
      `(${m.incBytes} bytes); unchanged sync build ${m.noop.toFixed(1)} ms`
    console.log(`[proxy-rules] 10k service ports x 3 endpoints, 258 chains. hairpin on: ${fmt(on)}. hairpin off: ${fmt(off)}. ` +
      `iptables -S of the three hooks ${list.ms.toFixed(0)} ms, iptables-save ${saved.ms.toFixed(0)} ms`)
  })

  it('REJECT in filter: accepted, found again, hooked first in INPUT/FORWARD/OUTPUT; a pod and the node are refused at once (TCP and UDP); an endpoint takes over in the same restore; cleanup removes it', async () => {
    const pod = await lab.addPod(HOST)
    const runIn = async (from: LabHost | string, argv: string[]): Promise<string> => {
      const r = await lab.exec(from, argv, { timeoutMs: 20_000 })
      if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr}`)
      return r.stdout.trim()
    }
    const probe = async (from: LabHost | string, proto: 'tcp' | 'udp', ip: string, port: number, timeoutMs = 1000): Promise<{ result: string, ms: number }> =>
      JSON.parse(await runIn(from, [process.execPath, PROBE, proto, ip, String(port), String(timeoutMs)])) as { result: string, ms: number }
    // an endpoint for later: a TCP server on the node itself (the probe resets each connection)
    const server = lab.spawn(HOST, [process.execPath, '-e', "require('node:net').createServer((s) => { s.on('error', () => {}); s.end('ok') }).listen(18443, () => console.log('listening'))"])
    await server.waitForLine(/listening/, 10_000)
    const node = lab.host(HOST).ip
    const web: ProxyServicePort = { key: 'lab/web', clusterIP: '10.96.0.10', port: 80, protocol: 'TCP', balance: 'round-robin', direct: [`${node}:18443`], agentSlots: 0 }
    const empty: ProxyServicePort = { key: 'lab/empty', clusterIP: '10.96.0.30', port: 443, protocol: 'TCP', balance: 'round-robin', direct: [], agentSlots: 0 }
    const dns: ProxyServicePort = { key: 'lab/dns', clusterIP: '10.96.0.53', port: 53, protocol: 'UDP', balance: 'round-robin', direct: [], agentSlots: 0 }

    // without rules a new connection to the ClusterIP leaves un-NATed and nobody answers
    expect((await probe(pod, 'tcp', empty.clusterIP, empty.port, 500)).result).toBe('timeout')

    // a CNI's chain first in FORWARD and OUTPUT, and a filter chain of ours from an older layout
    await restore('*filter\n:KUBE-FORWARD - [0:0]\n:EDGEMESH-OLDFILTER - [0:0]\n-I FORWARD 1 -j KUBE-FORWARD\n-I OUTPUT 1 -j KUBE-FORWARD\n-A EDGEMESH-OLDFILTER -j ACCEPT\nCOMMIT\n')
    const FILTER_HOOKS: FilterHookChain[] = ['INPUT', 'FORWARD', 'OUTPUT']
    const filterFixes = async (): Promise<string[]> => {
      const out: string[] = []
      for (const hook of FILTER_HOOKS) out.push(...filterHookFixRules(hook, await run(['iptables', '-t', 'filter', '-S', hook]), PREFIX))
      return out
    }
    expect(await filterFixes()).toHaveLength(3)
    const full = buildSyncRules([web, empty, dns], {
      chainPrefix: PREFIX, natExtraRules: await hookFixes(), filterExtraRules: await filterFixes(),
      existing: { nat: parseChains(await save(), PREFIX), filter: parseChains(await saveFilter(), PREFIX, 'filter') }
    })
    expect(full.reject.deleted).toEqual(['EDGEMESH-OLDFILTER'])
    await restore(full.text)
    const filter = await saveFilter()
    expect(parseChains(filter, PREFIX, 'filter')).toEqual([rejectChain(PREFIX)])
    // found again exactly as written
    const written = full.reject.text.split('\n').filter((l) => l.startsWith('-A '))
    expect(written).toHaveLength(2)
    expect(filter.split('\n').filter((l) => l.startsWith(`-A ${rejectChain(PREFIX)} `))).toEqual(written)
    for (const [i, hook] of FILTER_HOOKS.entries()) {
      const listing = await run(['iptables', '-t', 'filter', '-S', hook])
      expect(listing.split('\n').find((l) => l.startsWith(`-A ${hook} `))).toBe(filterJumpRules(PREFIX)[i]!.replace(/^-I (\S+) 1 /, '-A $1 '))
      expect(filterHookFixRules(hook, listing, PREFIX)).toEqual([])
    }
    expect(await filterFixes()).toEqual([])

    // refused at once: a pod (FORWARD) and the node (OUTPUT), TCP and UDP; the other Service is DNATed
    const tcpPod = await probe(pod, 'tcp', empty.clusterIP, empty.port)
    const tcpNode = await probe(HOST, 'tcp', empty.clusterIP, empty.port)
    const udpPod = await probe(pod, 'udp', dns.clusterIP, dns.port)
    const udpNode = await probe(HOST, 'udp', dns.clusterIP, dns.port)
    console.log(`[proxy-rules] refused: tcp pod ${tcpPod.ms} ms, tcp node ${tcpNode.ms} ms, udp pod ${udpPod.ms} ms, udp node ${udpNode.ms} ms`)
    for (const r of [tcpPod, tcpNode, udpPod, udpNode]) {
      expect(r.result).toBe('refused')
      expect(r.ms).toBeLessThan(1000)
    }
    // a client retrying at once is refused at once every time: a RST is not rate-limited (the
    // ICMP error would be, per client host: a burst of 6, then one a second)
    const burst: Array<{ result: string, ms: number }> = []
    for (let i = 0; i < 12; i++) burst.push(await probe(pod, 'tcp', empty.clusterIP, empty.port))
    expect(burst.map((r) => r.result)).toEqual(Array(12).fill('refused'))
    expect(Math.max(...burst.map((r) => r.ms))).toBeLessThan(1000)
    expect((await probe(pod, 'tcp', web.clusterIP, web.port)).result).toBe('connected')
    const counters = (await run(['iptables-save', '-c', '-t', 'filter'])).split('\n').filter((l) => l.includes(' -j REJECT '))
    expect(counters.map((l) => Number(/^\[(\d+):/.exec(l)?.[1])).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(16)

    // the empty Service gets an endpoint: DNAT added and REJECT gone in one restore
    const ready = { ...empty, direct: [`${node}:18443`] }
    const inc = buildSyncRules([web, ready, dns], { chainPrefix: PREFIX, previous: full.state })
    expect(inc.reject.written).toEqual([rejectChain(PREFIX)])
    expect(inc.text.indexOf('*nat')).toBeLessThan(inc.text.indexOf('*filter'))
    await restore(inc.text)
    expect((await probe(pod, 'tcp', empty.clusterIP, empty.port)).result).toBe('connected')
    expect((await probe(HOST, 'tcp', empty.clusterIP, empty.port)).result).toBe('connected')
    expect((await probe(pod, 'udp', dns.clusterIP, dns.port)).result).toBe('refused')
    expect((await saveFilter()).split('\n').filter((l) => l.startsWith(`-A ${rejectChain(PREFIX)} `))).toEqual(written.filter((l) => l.includes(dns.clusterIP)))
    // and loses it again
    const gone = buildSyncRules([web, empty, dns], { chainPrefix: PREFIX, previous: inc.state })
    await restore(gone.text)
    expect((await probe(pod, 'tcp', empty.clusterIP, empty.port)).result).toBe('refused')
    // what the incremental restores left equals a full build's
    const incremental = ours(await saveFilter())
    await cleanup()
    await restore(buildSyncRules([web, empty, dns], { chainPrefix: PREFIX }).text)
    expect(ours(await saveFilter())).toEqual(incremental)

    await cleanup()
    const left = (await saveFilter()) + (await save())
    expect(left).not.toContain('EDGEMESH')
    expect(left).toContain('-A FORWARD -j KUBE-FORWARD') // not ours: left alone
    expect((await probe(pod, 'tcp', empty.clusterIP, empty.port, 500)).result).toBe('timeout')
    await server.kill()
  })

  it('10,000 service ports with 100, then all, without endpoints: both tables in one restore', async () => {
    const input = (refused: (i: number) => boolean): ProxyServicePort[] => services(10_000).map((s, i) => refused(i) ? { ...s, direct: [] } : s)
    const timed = async (text: string): Promise<number> => { const t = performance.now(); await restore(text); return performance.now() - t }
    buildSyncRules(input(() => false), { chainPrefix: 'WARMUP' })
    const base = buildSyncRules(input(() => false), { chainPrefix: PREFIX })
    const baseMs = await timed(base.text)
    await cleanup()
    const some = buildSyncRules(input((i) => i % 100 === 0), { chainPrefix: PREFIX })
    const someMs = await timed(some.text)
    expect((await saveFilter()).split('\n').filter((l) => l.startsWith(`-A ${rejectChain(PREFIX)} `))).toHaveLength(100)
    const gains = buildSyncRules(input((i) => i % 100 === 0 && i !== 4200), { chainPrefix: PREFIX, previous: some.state })
    const gainMs = await timed(gains.text)
    await cleanup()
    const all = buildSyncRules(input(() => true), { chainPrefix: PREFIX })
    const allMs = await timed(all.text)
    expect((await saveFilter()).split('\n').filter((l) => l.startsWith(`-A ${rejectChain(PREFIX)} `))).toHaveLength(10_000)
    await cleanup()
    console.log(`[proxy-rules] 10k service ports x 3 endpoints, full restore of nat + filter: none refused ${baseMs.toFixed(0)} ms (${(base.text.length / 1e6).toFixed(1)} MB); ` +
      `100 refused ${someMs.toFixed(0)} ms (filter ${some.reject.text.length} bytes); one of them gaining an endpoint ${gainMs.toFixed(0)} ms (${gains.text.length} bytes); ` +
      `all 10,000 refused ${allMs.toFixed(0)} ms (${(all.text.length / 1e6).toFixed(1)} MB)`)
  })
})
