// bench:proxy's memory figures: the agents' RSS once start-up has settled, before any traffic
// (rss_idle_mb), and after the traffic phases, polled until it is back within 20 MiB of idle
// or 60 s have passed (rss_after_traffic_mb). Per agent the target is after <= idle + 20; the
// JSON fields carry the agent that grew the most.
import { memBackUnder, settledMem, type MemSample } from '../lab/rss.ts'

export const RSS_SLACK_MB = 20
export const RSS_RETURN_MS = 60_000

export interface RssAfter { idle: MemSample, after: MemSample, ok: boolean, ms: number }

/** The settled RSS of each agent (pid by host), measured one after the other. */
export async function rssIdle (pids: Record<string, number>): Promise<Record<string, MemSample>> {
  const idle: Record<string, MemSample> = {}
  for (const [host, pid] of Object.entries(pids)) idle[host] = await settledMem(pid)
  return idle
}

/** Polls every agent at once until each is back within RSS_SLACK_MB of its idle figure (or RSS_RETURN_MS passed). */
export async function rssAfterTraffic (pids: Record<string, number>, idle: Record<string, MemSample>): Promise<Record<string, RssAfter>> {
  const out: Record<string, RssAfter> = {}
  await Promise.all(Object.entries(pids).map(async ([host, pid]) => {
    const r = await memBackUnder(pid, idle[host]!.rssMb + RSS_SLACK_MB, RSS_RETURN_MS)
    out[host] = { idle: idle[host]!, after: r.sample, ok: r.ok, ms: r.ms }
  }))
  return out
}

/** The agent whose RSS grew the most, its figures as JSON fields, and whether every agent met the target. */
export function rssFields (after: Record<string, RssAfter>): { rss_idle_mb: number, rss_after_traffic_mb: number, rss_agent: string, rss_met: boolean } {
  const [host, worst] = Object.entries(after).sort(([, a], [, b]) => (b.after.rssMb - b.idle.rssMb) - (a.after.rssMb - a.idle.rssMb))[0]!
  return { rss_idle_mb: worst.idle.rssMb, rss_after_traffic_mb: worst.after.rssMb, rss_agent: host, rss_met: Object.values(after).every((r) => r.ok) }
}

/** One table row: measure, value, samples, compared with, ratio, target. */
export function rssRow (after: Record<string, RssAfter>): string[] {
  const f = rssFields(after)
  const per = Object.entries(after).map(([h, r]) => `${h} ${r.idle.rssMb} -> ${r.after.rssMb}${r.ok ? ` in ${(r.ms / 1000).toFixed(0)} s` : ' (60 s)'}`).join(', ')
  return [`rss_after_traffic_mb (${f.rss_agent})`, f.rss_after_traffic_mb.toFixed(1), per, `rss_idle_mb ${f.rss_idle_mb.toFixed(1)}`, `+${(f.rss_after_traffic_mb - f.rss_idle_mb).toFixed(1)} MiB`, `<= idle + ${RSS_SLACK_MB}: ${f.rss_met ? 'met' : 'NOT MET'}`]
}
