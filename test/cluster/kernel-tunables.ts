// The kubelet (protectKernelDefaults: false) sets a few host-wide kernel parameters at start
// (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1, ...); with true it refuses
// to start unless they already have its values. The test cluster notes the host's values in a
// file before the first kubelet starts and writes them back when the last cluster's kubelets are
// gone: also across processes, and after a killed run (its values stay noted until the next
// cluster of any run stops).
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CONTROL_PLANE_BIN } from '../controlplane/harness.ts'

const TUNABLES = ['vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops', 'kernel/keys/root_maxkeys', 'kernel/keys/root_maxbytes']
export const TUNABLES_FILE = '/tmp/edgemesh-kernel-tunables.json'

let users = 0

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

export function saveKernelTunables (): void {
  users++
  // A file left by a running cluster or a killed run holds the host's values: the current ones
  // may be the kubelet's.
  if (existsSync(TUNABLES_FILE)) return
  // no file but a kubelet running: a cluster started by code without this file owns the values
  if (kubeletRunning()) return
  const saved: Record<string, string> = {}
  for (const t of TUNABLES) {
    try { saved[t] = readFileSync(`/proc/sys/${t}`, 'utf8').trim() } catch { /* not on this kernel */ }
  }
  writeFileSync(TUNABLES_FILE + '.tmp', JSON.stringify(saved))
  renameSync(TUNABLES_FILE + '.tmp', TUNABLES_FILE)
}

export function restoreKernelTunables (): void {
  if (users > 0) users--
  if (users > 0 || kubeletRunning()) return // the last cluster to stop restores
  let saved: Record<string, string>
  try { saved = JSON.parse(readFileSync(TUNABLES_FILE, 'utf8')) as Record<string, string> } catch { return }
  for (const [t, v] of Object.entries(saved)) {
    if (!TUNABLES.includes(t) || !/^-?\d+$/.test(v)) continue
    try { writeFileSync(`/proc/sys/${t}`, v) } catch { /* read-only /proc/sys: nothing was changed either */ }
  }
  rmSync(TUNABLES_FILE, { force: true })
}
