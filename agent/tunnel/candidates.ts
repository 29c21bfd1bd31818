// Which of a peer's direct TCP candidates are worth a SYN. A private address means something
// only on its own site: dialled from another site it leaves through the site router towards
// nowhere and waits out the dial timeout. So a private candidate is dialled only when the peer
// is plausibly on our LAN: the address is on one of our directly connected subnets, or the
// relay saw both of us behind the same public IP (one site). Link-local, loopback and our own
// addresses never are. Explicit addresses from the peers file bypass this (operator's choice).
import { ipv4ToInt, isPrivateIPv4, sameSubnet, type LocalAddress } from '../../shared/net.ts'

export interface CandidateContext {
  /** our own addresses and their masks (bridges excluded, see localIPv4) */
  local: LocalAddress[]
  /** the relay observed the peer at our own public IP: both behind one NAT, one site */
  sameSite: boolean
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/

const inRange = (ip: string, base: string, bits: number): boolean => ((ipv4ToInt(ip) ^ ipv4ToInt(base)) >>> (32 - bits)) === 0

/** Addresses that never name another host: link-local, loopback, this-network, multicast and above. */
function neverDialled (ip: string): boolean {
  return inRange(ip, '169.254.0.0', 16) || inRange(ip, '127.0.0.0', 8) || inRange(ip, '0.0.0.0', 8) || inRange(ip, '224.0.0.0', 3)
}

export function isDialableTcpCandidate (host: string, ctx: CandidateContext): boolean {
  if (!IPV4.test(host) || neverDialled(host)) return false
  if (ctx.local.some((a) => a.address === host)) return false
  if (!isPrivateIPv4(host)) return true
  return ctx.sameSite || ctx.local.some((a) => sameSubnet(a.address, host, a.netmask))
}

/** The host of a `/ip4/<host>/tcp/<port>...` multiaddr string, or undefined for any other form. */
export function tcpHostOf (ma: string): string | undefined {
  return /^\/ip4\/([^/]+)\/tcp\/\d+(\/|$)/.exec(ma)?.[1]
}

/**
 * Whether the relay's introduction shows the peer behind our own public IP. The relay lists
 * the peer's observed endpoint first (server/rendezvous.ts candidatesOf); `ourObserved` is
 * where the same relay saw us.
 */
export function isSameSite (peerCandidates: ReadonlyArray<{ proto: string, host: string }>, ourObserved: { host: string } | null | undefined): boolean {
  const first = peerCandidates[0]
  return ourObserved != null && first != null && first.proto === 'udp' && first.host === ourObserved.host
}
