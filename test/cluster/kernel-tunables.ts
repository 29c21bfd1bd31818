// The kubelet (protectKernelDefaults: false) sets a few host-wide kernel parameters at start
// (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1, ...); with true it refuses
// to start unless they already have its values. The test cluster notes the host's values in a
// file before the first kubelet starts and writes them back when the last cluster is gone.
// The file also lists the clusters using it (any process on this host: two test runs at once),
// changed under a lock, so one run's restore can never come between another run's save and
// its kubelets' start (the values would then stay the kubelet's). A user whose process died (a
// killed run) no longer counts: the next cluster to stop restores.
import { linkSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { CONTROL_PLANE_BIN } from '../controlplane/harness.ts'
import { isAlive, procStartTime, sleepSync, type ProcRef } from '../lab/proc.ts'

const TUNABLES = ['vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops', 'kernel/keys/root_maxkeys', 'kernel/keys/root_maxbytes']
export const TUNABLES_FILE = '/tmp/edgemesh-kernel-tunables.json'
const LOCK_FILE = TUNABLES_FILE + '.lock'

interface Noted {
  /** the host's values, by /proc/sys path */
  saved: Record<string, string>
  /** clusters between save and restore: a process and a token of their own */
  users: Array<ProcRef & { token: string }>
}

/** Any test-cluster kubelet running on this host (ours are stopped before restoring). */
function kubeletRunning (): boolean {
  const kubelet = join(CONTROL_PLANE_BIN, 'kubelet')
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0')[0] === kubelet) return true
    } catch { /* gone */ }
  }
  return false
}

/** Runs fn holding the lock file (its holder's pid and start time inside; a dead holder's lock is taken over). */
function locked<T> (fn: () => T): T {
  // the lock appears with its holder's name in it (link: atomic, fails if it exists)
  const mine = `${LOCK_FILE}.${process.pid}.${randomUUID()}`
  writeFileSync(mine, `${process.pid} ${procStartTime(process.pid) ?? 0}`)
  try {
    for (;;) {
      try { linkSync(mine, LOCK_FILE); break } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      let holder: ProcRef | undefined
      try {
        const [pid, startTime] = readFileSync(LOCK_FILE, 'utf8').split(' ').map(Number)
        if (pid !== undefined && startTime !== undefined) holder = { pid, startTime }
      } catch { continue } // released meanwhile
      if (holder !== undefined && !isAlive(holder)) { rmSync(LOCK_FILE, { force: true }); continue }
      sleepSync(50)
    }
  } finally {
    rmSync(mine, { force: true })
  }
  try { return fn() } finally { rmSync(LOCK_FILE, { force: true }) }
}

function readNoted (): Noted | undefined {
  try {
    const n = JSON.parse(readFileSync(TUNABLES_FILE, 'utf8')) as Partial<Noted> & Record<string, unknown>
    // a file of the earlier format (left by a killed run) is the values alone
    if (n.saved === undefined) return { saved: n as Record<string, string>, users: [] }
    return { saved: n.saved, users: Array.isArray(n.users) ? n.users : [] }
  } catch { return undefined }
}

function writeNoted (n: Noted): void {
  writeFileSync(TUNABLES_FILE + '.tmp', JSON.stringify(n))
  renameSync(TUNABLES_FILE + '.tmp', TUNABLES_FILE)
}

/** Notes the host's values (unless already noted) and this cluster as a user; pass the token to restoreKernelTunables. */
export function saveKernelTunables (): string {
  const token = randomUUID()
  locked(() => {
    let noted = readNoted()
    if (noted === undefined) {
      // no file but a kubelet running: a cluster started by code without this file owns the values
      if (kubeletRunning()) return
      const saved: Record<string, string> = {}
      for (const t of TUNABLES) {
        try { saved[t] = readFileSync(`/proc/sys/${t}`, 'utf8').trim() } catch { /* not on this kernel */ }
      }
      noted = { saved, users: [] }
    }
    noted.users.push({ pid: process.pid, startTime: procStartTime(process.pid) ?? 0, token })
    writeNoted(noted)
  })
  return token
}

/** Drops this cluster as a user; the last one (no live user, no kubelet left) writes the host's values back. */
export function restoreKernelTunables (token: string): void {
  locked(() => {
    const noted = readNoted()
    if (noted === undefined) return
    noted.users = noted.users.filter(u => u.token !== token && isAlive(u))
    if (noted.users.length > 0 || kubeletRunning()) { writeNoted(noted); return }
    for (const [t, v] of Object.entries(noted.saved)) {
      if (!TUNABLES.includes(t) || !/^-?\d+$/.test(v)) continue
      try { writeFileSync(`/proc/sys/${t}`, v) } catch { /* read-only /proc/sys: nothing was changed either */ }
    }
    rmSync(TUNABLES_FILE, { force: true })
  })
}
