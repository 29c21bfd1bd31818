// The agent's link-local service address (DNS, the proxy) lives on a bridge device the agent owns
// (a bridge, because the dummy module may not exist on an edge node's kernel): created if missing,
// the address put on it idempotently, so restarts and a concurrent kubelet do not fight over it.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)

export function linkCommands (device: string, ip: string): string[][] {
  return [
    ['link', 'add', device, 'type', 'bridge'],
    ['addr', 'replace', `${ip}/32`, 'dev', device],
    ['link', 'set', device, 'up']
  ]
}

/**
 * The alias the agent gives a device it created: a later agent on the node (after a crash or a
 * kill that left the device behind) knows it may remove it on its own clean exit, while a
 * device someone else made keeps its place.
 */
export const OWNER_ALIAS = 'edgemesh-agent'

export async function ensureListenAddress (device: string, ip: string): Promise<void> {
  const [add, ...rest] = linkCommands(device, ip)
  let created = false
  try {
    await run('ip', add!)
    created = true
  } catch (err: any) {
    if (!/File exists/.test(String(err.stderr))) throw new Error(`cannot create device ${device}: ${String(err.stderr ?? err.message).trim()}`)
  }
  if (created) rest.unshift(['link', 'set', 'dev', device, 'alias', OWNER_ALIAS])
  for (const args of rest) {
    try { await run('ip', args) } catch (err: any) { throw new Error(`ip ${args.join(' ')}: ${String(err.stderr ?? err.message).trim()}`) }
  }
}

/**
 * Whether `device` is absent, the agent's (created by an agent: it carries OWNER_ALIAS), or
 * someone else's.
 */
export async function deviceOwner (device: string): Promise<'absent' | 'agent' | 'other'> {
  let out: string
  try {
    out = (await run('ip', ['-j', 'link', 'show', 'dev', device])).stdout
  } catch (err: any) {
    if (/does not exist|Cannot find device/.test(String(err.stderr))) return 'absent'
    throw new Error(`ip link show dev ${device}: ${String(err.stderr ?? err.message).trim()}`)
  }
  let links: Array<{ ifalias?: string }>
  try { links = JSON.parse(out) } catch { return 'other' }
  return links[0]?.ifalias === OWNER_ALIAS ? 'agent' : 'other'
}

/** Deletes a device the agent created; one already gone is fine. */
export async function removeDevice (device: string): Promise<void> {
  try {
    await run('ip', ['link', 'del', 'dev', device])
  } catch (err: any) {
    if (/does not exist|Cannot find device/.test(String(err.stderr))) return
    throw new Error(`ip link del dev ${device}: ${String(err.stderr ?? err.message).trim()}`)
  }
}
