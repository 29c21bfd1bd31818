// Running iptables for the proxy: which backend the host uses, atomic restores, the cheap hook
// listing used on every sync, and iptables-save for start-up and clean shutdown. All the rule
// text comes from rules.ts; this file only moves it to and from the kernel.
import { runCommand, type CommandResult } from './command-worker.ts'

export type Backend = 'nft' | 'legacy'
export { runCommand, type CommandResult }

const countRules = (saveText: string): number => saveText.split('\n').filter((l) => l.startsWith('-A ')).length

/**
 * The backend the host's other rules live in (like kubernetes-sigs/iptables-wrappers): the one
 * with more rules wins, so our hooks sit in the same tables as kube-proxy's or the CNI's; with
 * none anywhere, what `iptables -V` says.
 */
export async function detectBackend (): Promise<Backend> {
  const [nft, legacy, version] = await Promise.all([
    runCommand('iptables-nft-save', ['-t', 'nat']).catch(() => undefined),
    runCommand('iptables-legacy-save', ['-t', 'nat']).catch(() => undefined),
    runCommand('iptables', ['-V']).catch(() => undefined)
  ])
  const n = nft?.code === 0 ? countRules(nft.stdout) : -1
  const l = legacy?.code === 0 ? countRules(legacy.stdout) : -1
  if (n > 0 || l > 0) return l > n ? 'legacy' : 'nft'
  if (n < 0 && l < 0 && version == null) throw new Error('proxy: no iptables found (need iptables-nft or iptables-legacy)')
  if (n < 0) return 'legacy'
  if (l < 0) return 'nft'
  return /legacy/.test(version?.stdout ?? '') ? 'legacy' : 'nft'
}

export class Iptables {
  readonly backend: Backend
  private readonly bin: string
  private readonly restoreBin: string
  private readonly saveBin: string

  constructor (backend: Backend) {
    this.backend = backend
    this.bin = `iptables-${backend}`
    this.restoreBin = `iptables-${backend}-restore`
    this.saveBin = `iptables-${backend}-save`
  }

  /** Applies a restore payload atomically (all or nothing) without touching other chains. */
  async restore (text: string): Promise<void> {
    // -w: wait for the xtables lock other writers (kube-proxy, the CNI) hold
    const r = await runCommand(this.restoreBin, ['--noflush', '-w', '5'], text)
    if (r.code !== 0) throw new Error(`${this.restoreBin} failed (exit ${r.code}): ${firstLines(r.stderr)}`)
  }

  /** `iptables -t <table> -S <chain>`: a few lines, cheap even when the table is huge. */
  async listChain (chain: string, table = 'nat'): Promise<string> {
    const r = await runCommand(this.bin, ['-w', '5', '-t', table, '-S', chain])
    if (r.code !== 0) throw new Error(`${this.bin} -t ${table} -S ${chain} failed: ${firstLines(r.stderr)}`)
    return r.stdout
  }

  async save (table = 'nat'): Promise<string> {
    const r = await runCommand(this.saveBin, ['-t', table])
    if (r.code !== 0) throw new Error(`${this.saveBin} failed: ${firstLines(r.stderr)}`)
    return r.stdout
  }
}

function firstLines (s: string): string { return s.trim().split('\n').slice(0, 5).join(' | ') }
