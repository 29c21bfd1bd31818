// The relay's limits as plain data structures (no I/O, time passed in): a token bucket per key
// for request rates, a member -> group index for "at most N per source IP" with a total, and a
// per-key counter for held resources. server/rendezvous.ts, server/blind-relay.ts and
// server/relay-host.ts wrap them and count every refusal in edgemesh_relay_refusals_total.
import { LogThrottle } from '../shared/log-throttle.ts'
export { LogThrottle }

/** A token bucket: `burst` requests at once, refilled at `ratePerSecond`. */
export class TokenBucket {
  private readonly ratePerSecond: number
  private readonly burst: number
  private tokens: number
  private last: number

  constructor (ratePerSecond: number, burst: number, now: number) {
    this.ratePerSecond = ratePerSecond
    this.burst = burst
    this.tokens = burst
    this.last = now
  }

  /** Takes one token if there is one. */
  take (now: number): boolean {
    this.refill(now)
    if (this.tokens < 1) return false
    this.tokens -= 1
    return true
  }

  /** True when the bucket is full again (its state carries no information and can be dropped). */
  isFull (now: number): boolean {
    this.refill(now)
    return this.tokens >= this.burst
  }

  private refill (now: number): void {
    // a clock that steps back must not mint tokens (or take them)
    const elapsed = Math.max(0, now - this.last)
    this.tokens = Math.min(this.burst, this.tokens + elapsed * this.ratePerSecond / 1000)
    this.last = Math.max(this.last, now)
  }
}

/** One token bucket per key (an agent's peer id); a key with a full bucket needs no memory. */
export class KeyedRateLimiter {
  private readonly buckets = new Map<string, TokenBucket>()
  private readonly ratePerSecond: number
  private readonly burst: number

  constructor (ratePerSecond: number, burst: number) {
    this.ratePerSecond = ratePerSecond
    this.burst = burst
  }

  allow (key: string, now: number): boolean {
    let b = this.buckets.get(key)
    if (b == null) { b = new TokenBucket(this.ratePerSecond, this.burst, now); this.buckets.set(key, b) }
    return b.take(now)
  }

  forget (key: string): void { this.buckets.delete(key) }

  /** Drops the buckets that refilled completely. */
  prune (now: number): void {
    for (const [k, b] of this.buckets) if (b.isFull(now)) this.buckets.delete(k)
  }

  get size (): number { return this.buckets.size }
}

export type GroupVerdict = 'ok' | 'total' | 'per-group'

/**
 * Members (agents, peers) each in one group (their source IP), at most `maxPerGroup` per group
 * and `maxTotal` in all. A member already in a group is always admitted again there (refreshes);
 * one moving to another group needs room in the new one.
 */
export class GroupLimiter {
  private readonly groupOf = new Map<string, string>()
  private readonly members = new Map<string, Set<string>>()
  private readonly maxPerGroup: number
  private readonly maxTotal: number

  constructor (maxPerGroup: number, maxTotal = Infinity) {
    this.maxPerGroup = maxPerGroup
    this.maxTotal = maxTotal
  }

  check (member: string, group: string): GroupVerdict {
    const current = this.groupOf.get(member)
    if (current === group) return 'ok'
    if (current == null && this.groupOf.size >= this.maxTotal) return 'total'
    if ((this.members.get(group)?.size ?? 0) >= this.maxPerGroup) return 'per-group'
    return 'ok'
  }

  /** Records member in group (moving it from its previous group). */
  set (member: string, group: string): void {
    const current = this.groupOf.get(member)
    if (current === group) return
    if (current != null) this.delete(member)
    this.groupOf.set(member, group)
    let set = this.members.get(group)
    if (set == null) { set = new Set(); this.members.set(group, set) }
    set.add(member)
  }

  delete (member: string): void {
    const group = this.groupOf.get(member)
    if (group == null) return
    this.groupOf.delete(member)
    const set = this.members.get(group)!
    set.delete(member)
    if (set.size === 0) this.members.delete(group)
  }

  /** Removes the members of `group` that `alive` no longer vouches for (state kept elsewhere expired). */
  prune (group: string, alive: (member: string) => boolean): void {
    for (const m of [...(this.members.get(group) ?? [])]) if (!alive(m)) this.delete(m)
  }

  /** Removes every member, in every group, that `alive` no longer vouches for. */
  pruneAll (alive: (member: string) => boolean): void {
    for (const m of [...this.groupOf.keys()]) if (!alive(m)) this.delete(m)
  }

  countOf (group: string): number { return this.members.get(group)?.size ?? 0 }
  get size (): number { return this.groupOf.size }
}

/** How many of a resource each key holds, at most `max` each. */
export class KeyedCounter {
  private readonly counts = new Map<string, number>()
  private readonly max: number

  constructor (max: number) { this.max = max }

  tryAcquire (key: string): boolean {
    const n = this.counts.get(key) ?? 0
    if (n >= this.max) return false
    this.counts.set(key, n + 1)
    return true
  }

  release (key: string): void {
    const n = this.counts.get(key) ?? 0
    if (n <= 1) this.counts.delete(key)
    else this.counts.set(key, n - 1)
  }

  count (key: string): number { return this.counts.get(key) ?? 0 }
  get keys (): number { return this.counts.size }
}

/**
 * The per-IP caps when the config leaves them unset. With a PSK every registration (its MAC) and
 * every TCP connection (pnet) proves membership, and a site with all its nodes behind one NAT
 * must be able to register and reserve for each of them: the caps are the relay's totals (a
 * member is bounded by how fast it may join, joinsPerIpPerSecond, and by the totals). Without
 * a PSK anyone can register, so one address keeps a cap of OPEN_RELAY_PER_IP.
 */
export const OPEN_RELAY_PER_IP = 256

export function perIpLimits (limits: { maxAgentsPerIp?: number | undefined, maxReservationsPerIp?: number | undefined }, totals: { maxAgents: number, maxReservations: number }, hasPsk: boolean): { maxAgentsPerIp: number, maxReservationsPerIp: number } {
  return {
    maxAgentsPerIp: limits.maxAgentsPerIp ?? (hasPsk ? totals.maxAgents : OPEN_RELAY_PER_IP),
    maxReservationsPerIp: limits.maxReservationsPerIp ?? (hasPsk ? totals.maxReservations : OPEN_RELAY_PER_IP)
  }
}

/**
 * TCP connections being upgraded (pnet, noise, yamux) at once. libp2p's default of 10 let a
 * mass join over a WAN (an upgrade takes a few round trips) in at ~20 connections a second
 * whatever the rate limits; each pending upgrade ends within libp2p's inboundUpgradeTimeout (10 s).
 */
export const MAX_PENDING_UPGRADES = 256

/**
 * libp2p's connection manager for the relay: one TCP connection per agent (its reservation;
 * relayed circuits ride on it), twice that for reconnects that overlap the old connection's
 * close; new connections per source IP per second as for registrations (libp2p's default of 5
 * made 1,000 agents behind one NAT take over 3 minutes to reserve, failing and retrying).
 * Open connections per source IP (pending upgrades included) follow the per-IP caps the same
 * way, twice the larger: without a PSK noise completes for anyone, and one address at the join
 * rate filled all 20,000 (measured ~25 KiB RSS each: past the chart's 512Mi, and every new agent
 * refused); with a PSK the per-IP caps are the totals, so a site of any size behind one NAT fits.
 */
export function connectionLimits (maxAgents: number, maxReservations: number, joinsPerIpPerSecond: number,
  perIp: { maxAgentsPerIp: number, maxReservationsPerIp: number }): { maxConnections: number, inboundConnectionThreshold: number, maxIncomingPendingConnections: number, maxConnectionsPerIp: number } {
  const maxConnections = 2 * Math.max(maxAgents, maxReservations)
  return {
    maxConnections,
    inboundConnectionThreshold: Math.max(1, Math.ceil(joinsPerIpPerSecond)),
    maxIncomingPendingConnections: MAX_PENDING_UPGRADES,
    maxConnectionsPerIp: Math.min(maxConnections, 2 * Math.max(perIp.maxAgentsPerIp, perIp.maxReservationsPerIp))
  }
}

/** Counts a refusal by reason and logs it, at most once a minute per reason. */
export type Refuse = (reason: string, detail?: Record<string, unknown>) => void

export function createRefuse (count: (reason: string) => void, warn: (detail: Record<string, unknown>, msg: string) => void,
  now: () => number = Date.now, intervalMs = 60_000): Refuse {
  const throttle = new LogThrottle(intervalMs)
  return (reason, detail = {}) => {
    count(reason)
    if (throttle.shouldLog(reason, now())) warn({ reason, ...detail }, `relay refused a request (${reason}); more refusals for this reason are counted in edgemesh_relay_refusals_total, not logged, for a minute`)
  }
}
