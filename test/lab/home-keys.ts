// Agent keys chosen by home relay: a lab that needs agents homed on given relays (home-relay.ts
// ranks relays by a hash of the agent's peer id) draws keys from a pool generated up front and
// hands each host one homed where it must be, through Mesh's agentConfig (relay ids are known there).
import { join } from 'node:path'
import { homeRelay } from '../../agent/tunnel/home-relay.ts'
import { loadOrCreateIdentity } from '../../shared/identity.ts'

export interface HomeKeyPool {
  /** the identity file of an unused key homed on relays[want] */
  take: (relays: ReadonlyArray<{ peerId: string }>, want: number) => string
}

/** n keys in `dir` (64 leave about half on each of two relays: plenty for a lab) */
export async function homeKeyPool (dir: string, n = 64): Promise<HomeKeyPool> {
  const pool = await Promise.all(Array.from({ length: n }, async (_, i) => {
    const file = join(dir, `key${i}`)
    return { file, peerId: (await loadOrCreateIdentity(file)).peerId.toString() }
  }))
  const taken = new Set<string>()
  return {
    take: (relays, want) => {
      const k = pool.find((p) => !taken.has(p.file) && homeRelay(p.peerId, relays) === relays[want])
      if (k == null) throw new Error(`no key left in the pool homed on relay${want}`)
      taken.add(k.file)
      return k.file
    }
  }
}
