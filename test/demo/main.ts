// npm run demo — the product end to end in a throwaway lab: a relay on the "internet" and
// edge sites behind their own NATs (two cone, one symmetric, one with UDP blocked), the real
// edgemesh-server and edgemesh-agent binaries, and every user journey built so far, ending in
// a status table. The lab is torn down on success, failure and Ctrl-C.
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh } from '../lab/mesh.ts'
import { renderTable } from '../../shared/table.ts'
import { sleep } from '../lab/wait.ts'

const say = (s: string): void => { process.stdout.write(`${s}\n`) }

interface Journey { name: string, run: () => Promise<{ detail: string, ok: boolean }> }

async function main (): Promise<number> {
  let lab: Lab | undefined
  let mesh: Mesh | undefined
  try {
    say('edgemesh demo: building the lab (relay 198.51.100.10; sites a, b: cone NAT; c: symmetric NAT; d: UDP blocked)')
    lab = await createLab({
      sites: [{ name: 'a', nat: 'cone' }, { name: 'b', nat: 'cone' }, { name: 'c', nat: 'symmetric' }, { name: 'd', nat: 'udp-blocked' }]
    })
    say(`lab ${lab.prefix} up in ${lab.setupMs} ms; starting edgemesh-server and 4 agents`)
    mesh = await Mesh.start(lab, { agents: ['a1', 'b1', 'c1', 'd1'] })
    const m = mesh
    const hosts = ['a1', 'b1', 'c1', 'd1']
    const expected = (from: string, to: string): string => {
      const kind = (h: string): string => lab!.site(h[0]!).nat
      if (kind(from) === 'udp-blocked' || kind(to) === 'udp-blocked') return 'relay-tcp'
      if (kind(from) === 'symmetric' || kind(to) === 'symmetric') return 'relay-udp'
      return 'direct-udp'
    }

    const journeys: Journey[] = []
    for (const from of hosts) {
      for (const to of hosts) {
        if (from === to) continue
        journeys.push({
          name: `edgemesh ping ${m.nodeName(to)} (from ${m.nodeName(from)})`,
          run: async () => {
            const out = (await m.cli(from, ['ping', m.nodeName(to)])).trim()
            const want = expected(from, to)
            // the first stream may ride the relay while the punch completes; a second ping
            // shows the path the tunnel settles on
            const settled = want === 'direct-udp' && !out.includes(want) ? (await m.cli(from, ['ping', m.nodeName(to)])).trim() : out
            return { detail: settled.replace(/^pong from \S+ /, ''), ok: settled.includes(` via ${want} `) }
          }
        })
      }
    }
    journeys.push({
      name: 'bulk transfer edge-a1 -> edge-b1, 32 MiB, SHA-256 equal',
      run: async () => {
        const r = await m.call('a1', 'POST', `/diag/transfer?node=edge-b1&direction=send&bytes=${32 * 1024 * 1024}`)
        return { detail: `${r.path}, ${r.mbps} Mbit/s, sha256 ${String(r.sha256Local).slice(0, 12)}…`, ok: r.match === true }
      }
    })
    journeys.push({
      name: 'relay SIGKILLed and restarted: tunnels recover',
      run: async () => {
        await m.restartRelay(0)
        const t0 = Date.now()
        for (;;) {
          try {
            const r = await m.ping('a1', 'c1')
            const d = await m.ping('d1', 'b1')
            return { detail: `relayed pings answer ${Date.now() - t0} ms after restart (${r.path}, ${d.path})`, ok: Date.now() - t0 < 5_000 }
          } catch {
            if (Date.now() - t0 > 15_000) return { detail: 'no recovery in 15 s', ok: false }
            await sleep(100)
          }
        }
      }
    })

    const rows: string[][] = []
    let failed = 0
    for (const j of journeys) {
      let r: { detail: string, ok: boolean }
      try { r = await j.run() } catch (err: any) { r = { detail: err.message, ok: false } }
      if (!r.ok) failed++
      rows.push([r.ok ? 'PASS' : 'FAIL', j.name, r.detail])
      say(`${r.ok ? 'PASS' : 'FAIL'}  ${j.name}: ${r.detail}`)
    }

    say('\n$ edgemesh status   (on edge-a1)')
    say(await m.cli('a1', ['status']))
    say(renderTable(['RESULT', 'JOURNEY', 'DETAIL'], rows))
    say(`\n${journeys.length - failed} of ${journeys.length} journeys passed`)
    return failed === 0 ? 0 : 1
  } finally {
    await mesh?.stop()
    await lab?.teardown()
    say('lab torn down')
  }
}

process.exitCode = await main()
