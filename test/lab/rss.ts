// A lab process's memory as the kernel sees it (/proc/<pid>/status and smaps_rollup), and the two
// waits a memory check needs: until start-up has settled (the idle figure), and until the RSS is
// back near that figure after traffic. Shared by test/e2e/proxy-memory.test.ts and bench:proxy.
import { readFile } from 'node:fs/promises'
import { sleep } from './wait.ts'

export interface MemSample {
  /** resident set, MiB */
  rssMb: number
  /** anonymous resident memory (heap, malloc arenas, ArrayBuffers), MiB */
  anonMb: number
  /** file-backed resident memory (the node binary, shared libraries), MiB */
  fileMb: number
}

const mib = (kb: number): number => Math.round(kb / 1024 * 10) / 10

/** One reading of /proc/<pid>/status (RssAnon, RssFile). Throws when the process is gone. */
export async function memSample (pid: number): Promise<MemSample> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN)
  return { rssMb: mib(kb('VmRSS')), anonMb: mib(kb('RssAnon')), fileMb: mib(kb('RssFile')) }
}

/**
 * Waits until the RSS stopped moving: `windowMs` of samples every 500 ms that stay within
 * `bandMb` of each other (start-up GCs and the one heap compaction after ready are over).
 * Returns the window's last sample; after `timeoutMs` it returns the last sample anyway.
 */
export async function settledMem (pid: number, opts: { windowMs?: number, bandMb?: number, timeoutMs?: number } = {}): Promise<MemSample> {
  const windowMs = opts.windowMs ?? 3_000
  const band = opts.bandMb ?? 2
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000)
  const window: Array<{ at: number, s: MemSample }> = []
  for (;;) {
    const s = await memSample(pid)
    const at = Date.now()
    window.push({ at, s })
    while (window.length > 0 && window[0]!.at < at - windowMs) window.shift()
    const rss = window.map((w) => w.s.rssMb)
    const spanMs = at - window[0]!.at
    if ((spanMs >= windowMs - 600 && Math.max(...rss) - Math.min(...rss) <= band) || at >= deadline) return s
    await sleep(500)
  }
}

/** Samples `pid` every `everyMs` until stop() and keeps the highest RSS seen (the peak during traffic). */
export function peakMem (pid: number, everyMs = 250): { stop: () => Promise<MemSample | undefined> } {
  let peak: MemSample | undefined
  let running = true
  const loop = (async () => {
    while (running) {
      try {
        const s = await memSample(pid)
        if (peak == null || s.rssMb > peak.rssMb) peak = s
      } catch { return }
      await sleep(everyMs)
    }
  })()
  return { stop: async () => { running = false; await loop; return peak } }
}

/**
 * Polls until the RSS is at most `limitMb`, for up to `timeoutMs`. Returns the first sample under
 * the limit, or the lowest seen if it never got there (`ok` says which), and how long it took.
 */
export async function memBackUnder (pid: number, limitMb: number, timeoutMs: number, everyMs = 500): Promise<{ ok: boolean, sample: MemSample, ms: number }> {
  const t0 = Date.now()
  let lowest: MemSample | undefined
  for (;;) {
    const s = await memSample(pid)
    if (lowest == null || s.rssMb < lowest.rssMb) lowest = s
    const ms = Date.now() - t0
    if (s.rssMb <= limitMb) return { ok: true, sample: s, ms }
    if (ms >= timeoutMs) return { ok: false, sample: lowest, ms }
    await sleep(everyMs)
  }
}

/** "123.4 MiB (anon 80.1, file 43.3)" */
export function fmtMem (s: MemSample | undefined): string {
  return s == null ? '-' : `${s.rssMb} MiB (anon ${s.anonMb}, file ${s.fileMb})`
}

/** Where the anonymous memory sits (/proc/<pid>/smaps): glibc's brk heap, other anonymous mappings (mmapped chunks, thread arenas, V8's pages), MiB. */
export async function anonMappings (pid: number): Promise<{ brkHeapMb: number, otherAnonMb: number, mappings: number }> {
  const text = await readFile(`/proc/${pid}/smaps`, 'utf8')
  let name = ''
  let brk = 0; let other = 0; let mappings = 0
  for (const line of text.split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (head != null) { name = head[1]!; continue }
    const rss = /^Rss:\s+(\d+) kB/.exec(line)
    if (rss == null) continue
    if (name === '[heap]') brk += Number(rss[1])
    else if (name === '') { other += Number(rss[1]); mappings++ }
  }
  return { brkHeapMb: mib(brk), otherAnonMb: mib(other), mappings }
}
