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

export async function ensureListenAddress (device: string, ip: string): Promise<void> {
  const [add, ...rest] = linkCommands(device, ip)
  try {
    await run('ip', add!)
  } catch (err: any) {
    if (!/File exists/.test(String(err.stderr))) throw new Error(`cannot create device ${device}: ${String(err.stderr ?? err.message).trim()}`)
  }
  for (const args of rest) {
    try { await run('ip', args) } catch (err: any) { throw new Error(`ip ${args.join(' ')}: ${String(err.stderr ?? err.message).trim()}`) }
  }
}

/** Whether a network device exists (`ip link show dev <device>`). */
export async function deviceExists (device: string): Promise<boolean> {
  try {
    await run('ip', ['link', 'show', 'dev', device])
    return true
  } catch (err: any) {
    if (/does not exist|Cannot find device/.test(String(err.stderr))) return false
    throw new Error(`ip link show dev ${device}: ${String(err.stderr ?? err.message).trim()}`)
  }
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
