// The kubelet (protectKernelDefaults: false) sets a few host-wide kernel parameters at start
// (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1, ...); with true it refuses
// to start unless they already have its values. The test cluster saves them before its first
// kubelet starts and puts them back after its last one stopped.
import { readFileSync, writeFileSync } from 'node:fs'

const TUNABLES = ['vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops', 'kernel/keys/root_maxkeys', 'kernel/keys/root_maxbytes']

let saved: Map<string, string> | undefined
let users = 0

export function saveKernelTunables (): void {
  if (users++ > 0) return
  saved = new Map()
  for (const t of TUNABLES) {
    try { saved.set(t, readFileSync(`/proc/sys/${t}`, 'utf8').trim()) } catch { /* not on this kernel */ }
  }
}

export function restoreKernelTunables (): void {
  if (users === 0 || --users > 0 || saved === undefined) return
  for (const [t, v] of saved) {
    try { writeFileSync(`/proc/sys/${t}`, v) } catch { /* read-only /proc/sys: nothing was changed either */ }
  }
  saved = undefined
}
