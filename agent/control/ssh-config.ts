// `edgemesh ssh-config`: prints a ready ~/.ssh/config stanza, so `ssh root@edge-7.edge` goes
// through `edgemesh nc` and the local agent's SOCKS5 proxy (the agent takes `<node>.<suffix>`
// as the node's name, so ssh's %h is passed as it is).
import { basename, resolve } from 'node:path'
import { ConfigError } from '../../shared/errors.ts'
import { DEFAULT_SOCKS_PROXY } from './nc.ts'
import { parseHostPortOption } from '../../shared/host-port.ts'

export const DEFAULT_NODE_SUFFIX = 'edge'

export interface SshConfigArgs { suffix: string, proxy: string, command: string, user?: string, passwordFile?: string }

/** Quotes a word for the shell that runs ProxyCommand, when it needs it. */
export function shellWord (s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`
}

/**
 * How this CLI is run again from ssh: `edgemesh` as installed (a bin link named edgemesh), or
 * the running Node binary and script by absolute path.
 */
export function selfCommand (argv1: string | undefined = process.argv[1], execPath = process.execPath): string {
  if (argv1 == null) return 'edgemesh'
  if (basename(argv1) === 'edgemesh') return shellWord(resolve(argv1))
  return `${shellWord(execPath)} ${shellWord(resolve(argv1))}`
}

export function parseSshConfigArgs (o: { suffix?: string, proxy?: string, command?: string, user?: string, 'password-file'?: string }, env: NodeJS.ProcessEnv = process.env): SshConfigArgs {
  const suffix = (o.suffix ?? DEFAULT_NODE_SUFFIX).replace(/^\./, '')
  if (!/^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/.test(suffix)) throw new ConfigError(`--suffix ${o.suffix}: expected the agents' socks5.nodeSuffix, e.g. edge (lowercase letters, digits, '-' and '.')`)
  const proxy = o.proxy ?? env.EDGEMESH_SOCKS_PROXY ?? DEFAULT_SOCKS_PROXY
  parseHostPortOption(proxy, o.proxy != null ? '--proxy' : 'EDGEMESH_SOCKS_PROXY')
  if (o.command != null && o.command.trim() === '') throw new ConfigError('--command: give the command that runs edgemesh, e.g. /usr/local/bin/edgemesh')
  if ((o.user == null) !== (o['password-file'] == null)) throw new ConfigError(o.user == null ? '--password-file: give --user too' : '--user: give --password-file too (the password is never written into ssh_config)')
  return {
    suffix,
    proxy,
    command: o.command ?? selfCommand(),
    ...(o.user != null ? { user: o.user } : {}),
    ...(o['password-file'] != null ? { passwordFile: resolve(o['password-file']) } : {})
  }
}

export function sshConfigStanza (a: SshConfigArgs): string {
  const auth = a.user != null && a.passwordFile != null ? ` --user ${shellWord(a.user)} --password-file ${shellWord(a.passwordFile)}` : ''
  return [
    `# edgemesh: \`ssh <node>.${a.suffix}\` reaches that node through the local agent's SOCKS5 proxy`,
    `# at ${a.proxy} (from a laptop: kubectl port-forward to the agent pod, then --proxy 127.0.0.1:PORT).`,
    '# Append to ~/.ssh/config; add a `User` line if your nodes want another login than yours.',
    `Host *.${a.suffix}`,
    `    ProxyCommand ${a.command} nc --proxy ${shellWord(a.proxy)}${auth} %h %p`, // --proxy's host may be any word: quoted for the shell ssh runs
    ''
  ].join('\n')
}
