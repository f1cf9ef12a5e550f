import type { ErrorCode } from "./protocol.js";

/**
 * Why a request failed: a server `error` code (see PROTOCOL.md, "Errors"),
 * or one of the client's own:
 *
 * - `timeout`: no answer within the request's timeout (a send may still have
 *   been stored: send again with the same `clientId` to find out, exactly once);
 * - `queue_full`: more unacknowledged sends than `maxQueuedSends`;
 * - `frame_too_big`: the frame would exceed the server's `max_frame_bytes`
 *   (not sent; the server would close the connection with 1009);
 * - `not_joined`: the room was not joined with `room.join()` first (also a
 *   server code);
 * - `removed`: the user was removed from the (private) room;
 * - `disconnected`: the connection dropped while a `history` or `ping`
 *   request was in flight (those are not retried on their own);
 * - `closed`: `client.close()` was called, or the server closed the
 *   connection in a way that retrying would repeat (1002, 1007, 1009);
 * - `token_failed`: the token provider threw (the client retries with backoff).
 */
export type ClientErrorCode =
  | "timeout"
  | "queue_full"
  | "frame_too_big"
  | "removed"
  | "disconnected"
  | "closed"
  | "token_failed";

export type SwitchboardErrorCode = ErrorCode | ClientErrorCode;

export class SwitchboardError extends Error {
  override readonly name = "SwitchboardError";

  constructor(
    readonly code: SwitchboardErrorCode,
    message: string,
    /** For a send: its idempotency key, to send again exactly once. */
    readonly clientId?: string,
  ) {
    super(message);
  }
}
