// Errors shared across binaries, in a module with no dependencies (the catalog's list worker
// imports it without loading zod).

/** A configuration problem; the message names the field. Exits with status 2. */
export class ConfigError extends Error {
  constructor (message: string) { super(message); this.name = 'ConfigError' }
}
