// Which relay an agent calls home: highest-random-weight (rendezvous) hashing. Every agent
// ranks the relays by sha256(relayPeerId + '/' + agentPeerId), highest first, so any node
// can compute any other node's home from the relay list alone, adding a relay moves only
// the agents that rank it first (~1/(R+1) of them), and removing one moves only its own.
import { createHash } from 'node:crypto'

function weight (relayPeerId: string, agentPeerId: string): Buffer {
  return createHash('sha256').update(`${relayPeerId}/${agentPeerId}`).digest()
}

/** The relays in this agent's preference order (a new array; the input is not changed). */
export function rankRelays<T extends { peerId: string }> (agentPeerId: string, relays: readonly T[]): T[] {
  const scored = relays.map((relay) => ({ relay, w: weight(relay.peerId, agentPeerId) }))
  // Ties (same relay peer id listed twice) fall back to the peer id so the order stays total.
  scored.sort((a, b) => Buffer.compare(b.w, a.w) || (a.relay.peerId < b.relay.peerId ? -1 : a.relay.peerId > b.relay.peerId ? 1 : 0))
  return scored.map((s) => s.relay)
}

/** The relay this agent prefers (undefined with no relays). */
export function homeRelay<T extends { peerId: string }> (agentPeerId: string, relays: readonly T[]): T | undefined {
  return rankRelays(agentPeerId, relays)[0]
}
