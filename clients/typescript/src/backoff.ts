/**
 * Reconnect delays: exponential backoff with full jitter (a uniformly random
 * delay between 0 and the capped exponential), which spreads a crowd of
 * clients that lost the same edge instead of bringing them back together.
 *
 * Defaults sit between socket.io-client (1 s doubling to 5 s, ±50 %) and
 * centrifuge-js (0.5 s doubling to 20 s, full jitter): 0.5 s doubling to 10 s.
 */
export interface BackoffOptions {
  /** The cap of the first retry's delay, in ms (default 500). */
  initialDelayMs?: number;
  /** The largest cap, in ms (default 10,000). */
  maxDelayMs?: number;
  /** How much the cap grows per failed attempt (default 2). */
  factor?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  initialDelayMs: 500,
  maxDelayMs: 10_000,
  factor: 2,
};

/** The cap for retry number `attempt` (0 for the first retry). */
export function backoffCap(attempt: number, options: BackoffOptions = {}): number {
  const { initialDelayMs, maxDelayMs, factor } = { ...DEFAULT_BACKOFF, ...options };
  // Exponent bounded so a long outage cannot overflow to Infinity/NaN.
  return Math.min(maxDelayMs, initialDelayMs * factor ** Math.min(attempt, 64));
}

/** The delay before retry number `attempt`: uniform in [0, cap). */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCap(attempt, options));
}
