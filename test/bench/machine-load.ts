// CPU accounting for benchmarks in the lab: the whole machine (/proc/stat) and "foreign" work —
// processes that are neither in one of the lab's network namespaces nor descendants of this
// process (another test run sharing the machine, say). A benchmark compares paths measured one
// after the other; foreign load landing on some runs and not others skews the ratios, so the
// benchmark reports how much there was instead of silently publishing skewed numbers.
import { readdir, readFile, readlink, stat } from 'node:fs/promises'

const TICKS = 100 // USER_HZ on Linux

/** the whole machine's busy and total CPU seconds so far (idle and iowait are not busy) */
export async function machineCpu (): Promise<{ busy: number, total: number }> {
  const f = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number)
  const total = f.reduce((a, b) => a + b, 0)
  return { busy: (total - f[3]! - f[4]!) / TICKS, total: total / TICKS }
}

/** user and system CPU seconds of a process so far, all its threads */
export async function procCpu (pid: number | undefined): Promise<{ user: number, sys: number }> {
  if (pid == null) return { user: NaN, sys: NaN }
  const f = parseStat(await readFile(`/proc/${pid}/stat`, 'utf8'))
  return { user: f.utime / TICKS, sys: f.stime / TICKS }
}

function parseStat (text: string): { ppid: number, utime: number, stime: number, start: number } {
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ')
  // fields after the command: state(3) ppid(4) ... utime(14) stime(15) ... starttime(22)
  return { ppid: Number(f[1]), utime: Number(f[11]), stime: Number(f[12]), start: Number(f[19]) }
}

/**
 * Samples every process a few times a second and adds up the CPU used by foreign ones (kernel
 * threads are not counted: their softirq work may be the lab's own traffic). mark() returns the
 * foreign CPU seconds and machine busy seconds since the previous mark.
 */
export class ForeignLoad {
  private readonly labNs: Set<string>
  private readonly prev = new Map<string, number>()
  private foreign = 0
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private markAt = 0
  private markMachine = { busy: 0, total: 0 }
  private markForeign = 0

  private constructor (labNs: Set<string>) { this.labNs = labNs }

  /** namespaces: the lab's netns names (/run/netns/<name>) */
  static async start (namespaces: string[], intervalMs = 250): Promise<ForeignLoad> {
    const ids = new Set<string>()
    for (const ns of namespaces) {
      try { const s = await stat(`/run/netns/${ns}`); ids.add(`net:[${s.ino}]`) } catch { /* gone */ }
    }
    const f = new ForeignLoad(ids)
    await f.sample()
    f.foreign = 0 // the first sample only learns what runs already
    f.markAt = performance.now()
    f.markMachine = await machineCpu()
    f.timer = setInterval(() => { f.running ??= f.sample().finally(() => { f.running = undefined }) }, intervalMs)
    f.timer.unref()
    return f
  }

  /** more namespaces of the lab (pods added later) */
  async addNamespaces (namespaces: string[]): Promise<void> {
    for (const ns of namespaces) {
      try { const s = await stat(`/run/netns/${ns}`); this.labNs.add(`net:[${s.ino}]`) } catch { /* gone */ }
    }
  }

  private async sample (): Promise<void> {
    const procs = new Map<number, { ppid: number, cpu: number, key: string }>()
    for (const name of await readdir('/proc')) {
      const pid = Number(name)
      if (!Number.isInteger(pid)) continue
      try {
        const s = parseStat(await readFile(`/proc/${pid}/stat`, 'utf8'))
        procs.set(pid, { ppid: s.ppid, cpu: (s.utime + s.stime) / TICKS, key: `${pid}:${s.start}` })
      } catch { /* exited */ }
    }
    const mine = new Map<number, boolean>()
    const isMine = (pid: number, depth = 0): boolean => {
      if (pid === process.pid) return true
      if (pid <= 2 || depth > 64) return pid === 2 // kthreadd's children: kernel threads, not foreign
      const known = mine.get(pid)
      if (known != null) return known
      const p = procs.get(pid)
      const r = p == null ? false : isMine(p.ppid, depth + 1)
      mine.set(pid, r)
      return r
    }
    const seen = new Set<string>()
    for (const [pid, p] of procs) {
      seen.add(p.key)
      const before = this.prev.get(p.key)
      this.prev.set(p.key, p.cpu)
      if (isMine(pid)) continue
      let ns = ''
      try { ns = await readlink(`/proc/${pid}/ns/net`) } catch { continue }
      if (this.labNs.has(ns)) continue
      // a process first seen now: only what it used since the last sample can be ours to count,
      // and we cannot know it, so count all of it (short-lived processes are what we look for)
      this.foreign += p.cpu - (before ?? 0)
    }
    for (const k of this.prev.keys()) if (!seen.has(k)) this.prev.delete(k)
  }

  /** foreign CPU seconds, machine busy seconds, wall seconds and cores since the previous mark */
  async mark (): Promise<{ foreignS: number, machineBusyS: number, wallS: number, foreignPct: number }> {
    await this.running
    await this.sample()
    const m = await machineCpu()
    const now = performance.now()
    const wallS = (now - this.markAt) / 1000
    const r = { foreignS: this.foreign - this.markForeign, machineBusyS: m.busy - this.markMachine.busy, wallS, foreignPct: 0 }
    r.foreignPct = 100 * r.foreignS / Math.max(1e-9, m.total - this.markMachine.total)
    this.markAt = now; this.markMachine = m; this.markForeign = this.foreign
    return r
  }

  stop (): void { clearInterval(this.timer) }
}
