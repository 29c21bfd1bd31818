#!/usr/bin/env node
// Runs the compiled JavaScript in dist/ (npm run build; npm test, demo and benches build first).
// Compiled code starts faster and uses ~30 MB less memory than stripping types at run time.
//
// glibc malloc: the tunnel and the proxy churn through buffers of 16-64 KiB (socket reads, UDX
// receive buffers, noise frames). Below glibc's mmap threshold (128 KiB, and it rises by itself
// up to 32 MiB) they come from the brk heap, which is returned to the OS only from its top, so
// after 1 GiB of proxied traffic an idle agent stayed at 580 MB RSS (100 MB before) with a
// 30 MB V8 heap; `malloc_trim(0)` took it back to 142 MB. A fixed threshold of 16 KiB puts those
// buffers in their own mappings, unmapped when freed (test/e2e/proxy-memory.test.ts). The cost,
// mmap/munmap and fresh pages: ~60 ms more system CPU per GiB of such buffers allocated, under
// 1% of the ~47 CPU s a GiB through the proxy takes (agent/proxy/FINDINGS.md). The variable
// must be set before the process starts, so the agent re-executes itself once with it
// (process.execve: same pid, one more Node start-up); the manifests and the lab set it
// directly, and a GLIBC_TUNABLES that already sets the threshold is kept. Other C libraries
// ignore the variable.
const MMAP_THRESHOLD = 'glibc.malloc.mmap_threshold=16384'
const tunables = process.env.GLIBC_TUNABLES ?? ''
if (process.platform === 'linux' && typeof process.execve === 'function' && !tunables.includes('glibc.malloc.mmap_threshold')) {
  try {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], { ...process.env, GLIBC_TUNABLES: tunables === '' ? MMAP_THRESHOLD : `${tunables}:${MMAP_THRESHOLD}` })
  } catch { /* not replaced (a sandbox without execve): run with the defaults */ }
}
const { runMain } = await import('../dist/shared/cli-main.js')
const { main } = await import('../dist/agent/main.js')
runMain(() => main(process.argv.slice(2)))
