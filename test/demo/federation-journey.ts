// The demo's relay federation journey (its own lab: two relays, two sites behind symmetric NATs):
// a1 is homed on relay0 and b1 on relay1 (keys drawn by home, test/lab/home-keys.ts); a1 reaches
// b1 through b1's home relay; relay1 is SIGKILLed; b1 moves to relay0 and a1 reaches it again.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLab, type Lab } from '../lab/lab.ts'
import { Mesh } from '../lab/mesh.ts'
import { homeKeyPool } from '../lab/home-keys.ts'
import { eventually } from '../lab/wait.ts'

const HOMES: Record<string, number> = { a1: 0, b1: 1 }

export async function relayFederationJourney (say: (s: string) => void): Promise<{ detail: string, ok: boolean }> {
  const keyDir = await mkdtemp(join(tmpdir(), 'edgemesh-demo-keys-'))
  let lab: Lab | undefined
  let mesh: Mesh | undefined
  try {
    const keys = await homeKeyPool(keyDir)
    lab = await createLab({ relays: 2, sites: [{ name: 'a', nat: 'symmetric' }, { name: 'b', nat: 'symmetric' }] })
    mesh = await Mesh.start(lab, { agents: ['a1', 'b1'], agentConfig: (host, relays) => ({ identityFile: keys.take(relays, HOMES[host]!) }) })
    const m = mesh
    const roles = async (h: string): Promise<string> => (await m.status(h)).relays.map((r: any, i: number) => `relay${i} ${r.role}`).join(', ')
    const before = await m.ping('a1', 'b1')
    say(`  a1 (${await roles('a1')}) -> b1 (${await roles('b1')}): ${before.path} ${before.remote}`)
    await m.relays[1]!.proc.kill('SIGKILL')
    const killed = Date.now()
    const after = await eventually(async () => {
      const r = await m.call('a1', 'POST', '/ping?node=edge-b1&count=1', 3_000)
      if (r.remote !== `${lab!.relays[0]!.ip}:4002`) throw new Error(`${r.path} ${r.remote}`)
      return { ...r, ms: Date.now() - killed }
    }, 20_000, 50)
    const b1 = await roles('b1')
    say(`  relay1 SIGKILLed: b1 now ${b1}; a1 -> b1 ${after.path} ${after.remote} after ${after.ms} ms`)
    return {
      detail: `a1 (home relay0) reached b1 (home relay1) via ${before.path} ${before.remote}; relay1 killed: b1 re-homed to relay0, a1 -> b1 again via ${after.path} ${after.remote} after ${after.ms} ms`,
      ok: before.remote === `${lab.relays[1]!.ip}:4002` && b1.startsWith('relay0 home') && after.ms <= 5_000
    }
  } finally {
    await mesh?.stop()
    await lab?.teardown()
    await rm(keyDir, { recursive: true, force: true })
  }
}
