export { type BackoffOptions, backoffCap, backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export {
  type ClientEvents,
  type ConnectionState,
  type NetworkEvents,
  Switchboard,
  type SwitchboardOptions,
  type WebSocketConstructor,
  type WebSocketLike,
  type Welcome,
} from "./client.js";
export { type ClientErrorCode, SwitchboardError, type SwitchboardErrorCode } from "./errors.js";
export type { ClientFrame, ErrorCode, Limits, MessageFrame, ServerFrame } from "./protocol.js";
export { type HistoryPage, type Joined, Room, type RoomEvents, type RoomOptions, type SendOptions, type Sent } from "./room.js";
