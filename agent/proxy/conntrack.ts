// Stale conntrack entries for a service port that just got its rules. A connection attempt to a
// ClusterIP before the agent programmed it is tracked with no NAT, and confirmed (the SYN was
// routed on towards the default gateway); a later connection from the same client port matches
// that entry for its whole timeout (120 s for SYN_SENT) and is never DNATed, so it hangs. When a
// service port goes from no rules to rules, its entries that were not NATed (the reply would come
// from the ClusterIP itself) are deleted, as kube-proxy does for UDP Services that get their first
// endpoint. NATed entries (from rules it had before) are left to finish.
import { runCommand } from './iptables.ts'
import type { L4Protocol } from './wire.ts'

/** Deletes the un-NATed tracked flows to ip:port/protocol; resolves with how many there were. */
export async function deleteUnNatedFlowsTo (ip: string, port: number, protocol: L4Protocol): Promise<number> {
  const args = ['-D', '-p', protocol.toLowerCase(), '--orig-dst', ip, '--orig-port-dst', String(port), '--reply-src', ip]
  const r = await runCommand('conntrack', args, undefined, 10_000)
  // exit 0: some deleted; exit 1 with "0 flow entries": none (both print the count on stderr)
  const m = /(\d+) flow entr/.exec(r.stderr)
  if (m != null) return Number(m[1])
  throw new Error(`conntrack -D exited ${r.code}: ${r.stderr.trim()}`)
}
