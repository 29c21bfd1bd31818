// The proxy's generated iptables rules against the real iptables-restore and kernel, inside a
// lab namespace: accepted as written, found again in iptables-save, jumps repaired to the top
// when another chain got in first, stale chains removed, cleanup leaves nothing; and the time
// iptables-restore itself takes for 1,000 Services (10,000 took over 120 s here: see the proxy issue).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLab, type Lab } from '../lab/lab.ts'
import { buildRules, cleanupRules, jumpFixRules, jumpRules, needsJumpFix, parseChains, type ProxyService } from '../../agent/proxy/rules.ts'

const PREFIX = 'EDGEMESH'
let lab: Lab

async function restore (text: string): Promise<void> {
  const r = await lab.exec('a1', ['iptables-restore', '--noflush'], { input: text, timeoutMs: 120_000 })
  if (r.code !== 0) throw new Error(`iptables-restore failed (${r.code}): ${r.stderr}\n${text.slice(0, 2000)}`)
}
async function save (): Promise<string> {
  return (await lab.exec('a1', ['iptables-save', '-t', 'nat'])).stdout
}
const services = (n: number, endpoints = 3): ProxyService[] => Array.from({ length: n }, (_, i) => ({
  key: `ns${i % 20}/svc-${i}`, clusterIP: `10.96.${i >> 8}.${i & 255}`, port: 80, protocol: 'TCP', mode: 'dnat',
  endpoints: Array.from({ length: endpoints }, (_, j) => `10.1.${j}.${(i % 250) + 1}:8080`)
}))

beforeAll(async () => { lab = await createLab({ sites: [{ name: 'a', nat: 'cone' }] }) })
afterAll(async () => { await lab?.teardown() })

describe('proxy iptables rules in a real kernel (lab namespace)', () => {
  it('are accepted by iptables-restore, found again, and hooked first; stale chains go; cleanup removes everything', async () => {
    const first = buildRules([...services(3), { key: 'ns/tunnelled', clusterIP: '10.96.9.9', port: 53, protocol: 'UDP', mode: 'redirect', endpoints: [], redirectPort: 15353 }], { chainPrefix: PREFIX })
    expect(first.skipped).toEqual([])
    await restore(first.text)
    let text = await save()
    expect(parseChains(text, PREFIX)).toEqual([...first.chains].sort())
    expect(text).toMatch(/-A EDGEMESH-SERVICES -d 10\.96\.9\.9\/32 -p udp -m udp --dport 53 .*-j EDGEMESH-SVC-/)
    expect(text).toMatch(/--probability 0\.333333333\d* -j EDGEMESH-SEP-/)

    // someone else's chain takes the top of PREROUTING (kube-proxy after a reboot): repaired
    await restore(['*nat', ':KUBE-SERVICES - [0:0]', '-I PREROUTING 1 -j KUBE-SERVICES', '-I OUTPUT 1 -j KUBE-SERVICES', 'COMMIT', ''].join('\n'))
    await restore(['*nat', ...jumpRules(PREFIX), 'COMMIT', ''].join('\n'))
    await restore(['*nat', '-I PREROUTING 1 -j KUBE-SERVICES', 'COMMIT', ''].join('\n'))
    text = await save()
    expect(needsJumpFix(text, PREFIX)).toBe(true)
    const second = buildRules(services(2), { chainPrefix: PREFIX, existingChains: parseChains(text, PREFIX), extraRules: jumpFixRules(text, PREFIX) })
    await restore(second.text)
    text = await save()
    expect(needsJumpFix(text, PREFIX)).toBe(false)
    expect(text.split('\n').filter((l) => l.startsWith('-A PREROUTING'))[0]).toMatch(/-j EDGEMESH-SERVICES$/)
    expect(parseChains(text, PREFIX)).toEqual([...second.chains].sort())
    expect(second.deleted.length).toBeGreaterThan(0)

    const cleanup = cleanupRules(text, PREFIX)
    await restore(cleanup)
    text = await save()
    expect(parseChains(text, PREFIX)).toEqual([])
    expect(text).not.toContain('EDGEMESH')
    expect(text).toContain('KUBE-SERVICES') // not ours: left alone
  })

  it('iptables-restore applies 1,000 Services (3 endpoints each); the generator is a fraction of that', async () => {
    const t0 = performance.now()
    const rules = buildRules(services(1_000), { chainPrefix: PREFIX })
    const buildMs = performance.now() - t0
    const t1 = performance.now()
    await restore(rules.text)
    const restoreMs = performance.now() - t1
    const text = await save()
    expect(parseChains(text, PREFIX).length).toBe(rules.chains.length)
    console.log(`[proxy-rules] 1k Services: ${rules.chains.length} chains, ${(rules.text.length / 1e6).toFixed(1)} MB; build ${buildMs.toFixed(0)} ms, iptables-restore ${restoreMs.toFixed(0)} ms`)
    await restore(cleanupRules(text, PREFIX))
    expect(parseChains(await save(), PREFIX)).toEqual([])
  })
})
