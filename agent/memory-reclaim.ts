// Gives memory back once traffic has passed. Every byte the proxy and the tunnel move goes
// through short-lived ArrayBuffers (socket reads, UDX packets, noise frames); those that
// survived two scavenges (data that waited in a paused stream) are freed only by a major GC,
// which an idle agent may not run for minutes, so their malloc memory stayed resident
// (issue 11: RSS 100 -> 580 MB after 1 GiB, V8 heap unchanged at ~30 MB). When the RSS has
// grown 8 MiB past its floor, one memory-reducing GC frees them; with glibc's mmap threshold
// lowered (bin/edgemesh-agent.js, the manifests), the freed buffers go back to the OS at once.
// Cheap and bounded: one RSS read (a /proc read) per tick, at most one GC per cooldown, and the
// cooldown doubles (up to maxCooldownMs) while GCs do not bring the RSS back, i.e. while traffic
// still flows. A GC that does not help while the agent was idle (CPU below idleCpuFraction since
// the previous check) means the memory is live state (a bigger catalog, more peers): its RSS
// becomes the new floor, so a grown baseline does not cost a GC every cooldown forever.

type GcOptions = { type: 'major', execution: 'sync', flavor: 'last-resort' }

export interface MemoryReclaimOptions {
  /** how often the RSS is read (default 5 s) */
  intervalMs?: number
  /** a GC runs when the RSS exceeds the lowest post-GC RSS by more than this (default 8 MiB) */
  growthBytes?: number
  /** the longest wait between two GCs while they do not help (default 20 s) */
  maxCooldownMs?: number
  /** below this share of one core between two checks the agent counts as idle (default 0.05) */
  idleCpuFraction?: number
  /** injectable for tests */
  rss?: () => number
  /** CPU time this process used so far, in ms */
  cpuMs?: () => number
  gc?: () => void
  now?: () => number
}

export interface MemoryReclaimState {
  /** the lowest RSS measured right after a GC (or at start) */
  floorBytes: number
  gcs: number
}

/** The pure decision: run a GC now? `sinceLastGcMs` is Infinity before the first. */
/**
 * The floor after a GC: the lowest post-GC RSS, or (a GC that did not help on an idle agent)
 * the RSS it left, which is then live memory rather than traffic's garbage.
 */
export function nextFloor (floor: number, after: number, growthBytes: number, idle: boolean): number {
  if (after > floor + growthBytes && idle) return after
  return Math.min(floor, after)
}

export function shouldReclaim (rss: number, floor: number, growthBytes: number, sinceLastGcMs: number, cooldownMs: number): boolean {
  return rss > floor + growthBytes && sinceLastGcMs >= cooldownMs
}

/** Starts the periodic check; a no-op (but still stoppable) without `node --expose-gc`. */
export function startMemoryReclaim (opts: MemoryReclaimOptions = {}): { stop: () => void, state: () => MemoryReclaimState } {
  const intervalMs = opts.intervalMs ?? 5_000
  const growth = opts.growthBytes ?? 8 * 2 ** 20
  const maxCooldown = opts.maxCooldownMs ?? 20_000
  const rss = opts.rss ?? (() => process.memoryUsage.rss())
  const now = opts.now ?? Date.now
  const idleCpu = opts.idleCpuFraction ?? 0.05
  const cpuMs = opts.cpuMs ?? (() => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 })
  const exposed = (globalThis as { gc?: (o: GcOptions) => void }).gc
  const gc = opts.gc ?? (exposed != null ? () => { exposed({ type: 'major', execution: 'sync', flavor: 'last-resort' }) } : undefined)
  let floor = rss()
  let gcs = 0
  let lastGc = -Infinity
  let cooldown = intervalMs
  let lastTick = { at: now(), cpu: cpuMs() }
  const tick = (): void => {
    if (gc == null) return
    const at = now()
    const cpu = cpuMs()
    const idle = at > lastTick.at && (cpu - lastTick.cpu) / (at - lastTick.at) < idleCpu
    lastTick = { at, cpu }
    if (!shouldReclaim(rss(), floor, growth, at - lastGc, cooldown)) return
    gc()
    gcs++
    lastGc = now()
    const after = rss()
    if (after <= floor + growth || idle) cooldown = intervalMs // back near the floor, or a new floor
    else cooldown = Math.min(cooldown * 2, maxCooldown) // still live data: traffic flows, back off
    floor = nextFloor(floor, after, growth, idle)
  }
  const timer = gc != null ? setInterval(tick, intervalMs) : undefined
  timer?.unref()
  return {
    stop: () => { if (timer != null) clearInterval(timer) },
    state: () => ({ floorBytes: floor, gcs })
  }
}
