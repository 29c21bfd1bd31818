// Stale conntrack entries for a service port that just got its rules. A connection attempt to a
// ClusterIP before the agent programmed it is tracked with no NAT, and confirmed (the SYN was
// routed on towards the default gateway); a later connection from the same client port matches
// that entry for its whole timeout (120 s for SYN_SENT) and is never DNATed, so it hangs. When a
// service port goes from no rules to rules, every entry to it is stale by construction (nothing
// DNATed it), and is deleted, as kube-proxy does for UDP Services that get their first endpoint.
import { runCommand } from './iptables.ts'
import type { L4Protocol } from './wire.ts'

/** Deletes the tracked flows to ip:port/protocol; resolves with how many there were. */
export async function deleteFlowsTo (ip: string, port: number, protocol: L4Protocol): Promise<number> {
  const r = await runCommand('conntrack', ['-D', '-p', protocol.toLowerCase(), '--orig-dst', ip, '--orig-port-dst', String(port)], undefined, 10_000)
  // exit 0: some deleted; exit 1 with "0 flow entries": none (both print the count on stderr)
  const m = /(\d+) flow entr/.exec(r.stderr)
  if (m != null) return Number(m[1])
  throw new Error(`conntrack -D exited ${r.code}: ${r.stderr.trim()}`)
}
