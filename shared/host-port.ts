// host:port text (listen addresses in the config, `--proxy` on the command line): one parser, so
// the config check, the listeners and the CLI agree on what an address is.
import { ConfigError } from './errors.ts'

const HOST_PORT = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/

/** host:port or [v6]:port (brackets dropped), or undefined when it is neither or the port is above 65535. */
export function splitHostPort (s: string): { host: string, port: number } | undefined {
  const m = HOST_PORT.exec(s)
  if (m == null) return undefined
  const port = Number(m[3])
  return port <= 65535 ? { host: m[1] ?? m[2]!, port } : undefined
}

/** An address the config schema already checked (listen.http, metrics, socks5.listen, dns.listen...). */
export function parseHostPort (s: string): { host: string, port: number } {
  const hp = splitHostPort(s)
  if (hp == null) throw new ConfigError(`${s}: expected host:port`)
  return hp
}

/** A command-line HOST:PORT (port 1-65535), or a one-line ConfigError naming where it came from. */
export function parseHostPortOption (raw: string, option: string): { host: string, port: number } {
  const hp = splitHostPort(raw)
  if (hp == null || hp.port < 1) throw new ConfigError(`${option} ${raw}: expected HOST:PORT, e.g. 127.0.0.1:10800`)
  return hp
}
