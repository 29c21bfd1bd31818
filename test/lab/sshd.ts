// Real OpenSSH in the network lab: an sshd in a lab host's namespace on port 22 with a throwaway
// host key, and a client key authorized for this run only. The client side gets a known_hosts
// file that pins each host key to the node name the operator types, so a session that reaches
// the wrong node fails host key checking instead of passing silently.
import { execFile } from 'node:child_process'
import { mkdirSync, writeFileSync, readFileSync, appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Lab, LabProcess } from './lab.ts'

const execFileP = promisify(execFile)
export const SSHD_BIN = '/usr/sbin/sshd' // sshd re-executes itself: it must be started by absolute path

export interface SshKeys {
  dir: string
  /** the client's private key (authorized on every sshd of this run) */
  identity: string
  /** host key pins, one line per node name (`<name> <key>`) */
  knownHosts: string
}

export async function keygen (file: string, comment: string): Promise<string> {
  await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file])
  return readFileSync(`${file}.pub`, 'utf8').trim()
}

/** A client key pair for this run and an empty known_hosts, in dir. */
export async function clientKeys (dir: string): Promise<SshKeys> {
  mkdirSync(dir, { recursive: true })
  const identity = join(dir, 'id_ed25519')
  await keygen(identity, 'edgemesh-e2e')
  const knownHosts = join(dir, 'known_hosts')
  writeFileSync(knownHosts, '')
  return { dir, identity, knownHosts }
}

export interface Sshd { host: string, proc: LabProcess, hostKeyLine: string }

/**
 * Starts sshd on lab host `host` (port 22, all its addresses), accepting only keys.identity for
 * root, and pins its host key in keys.knownHosts under each of `names` (what ssh sees as %h).
 */
export async function startSshd (lab: Lab, host: string, keys: SshKeys, names: string[]): Promise<Sshd> {
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }) // privilege separation directory sshd checks for
  const dir = join(keys.dir, `sshd-${host}`)
  mkdirSync(dir, { recursive: true })
  const hostKey = join(dir, 'host_ed25519')
  const hostPub = await keygen(hostKey, `host-${host}`)
  const authorized = join(dir, 'authorized_keys')
  writeFileSync(authorized, readFileSync(`${keys.identity}.pub`, 'utf8'))
  const config = join(dir, 'sshd_config')
  writeFileSync(config, [
    'Port 22',
    'ListenAddress 0.0.0.0',
    `HostKey ${hostKey}`,
    `AuthorizedKeysFile ${authorized}`,
    'PidFile none',
    'StrictModes no', // the key files live in a temporary directory
    'UsePAM no',
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PrintMotd no',
    'UseDNS no',
    'LogLevel INFO',
    'Subsystem sftp internal-sftp',
    ''
  ].join('\n'))
  const [type, key] = hostPub.split(' ')
  appendFileSync(keys.knownHosts, names.map((n) => `${n} ${type} ${key}\n`).join(''))
  const proc = lab.spawn(host, [SSHD_BIN, '-D', '-e', '-f', config], { logFile: join(dir, 'sshd.log') })
  await proc.waitForLine(/Server listening on 0\.0\.0\.0 port 22/, 10_000)
  return { host, proc, hostKeyLine: `${type} ${key}` }
}

/**
 * ssh's options for a non-interactive session through `proxyCommand` (ProxyCommand syntax: %h
 * and %p are the target name and port): this run's key only, host keys pinned, no prompts.
 */
export function sshOptions (keys: SshKeys, proxyCommand: string): string[] {
  return [
    '-F', '/dev/null',
    '-i', keys.identity,
    '-o', 'IdentitiesOnly=yes',
    '-o', 'BatchMode=yes',
    '-o', `UserKnownHostsFile=${keys.knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'ConnectTimeout=30',
    '-o', 'LogLevel=ERROR',
    '-o', `ProxyCommand=${proxyCommand}`
  ]
}
