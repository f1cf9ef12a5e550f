// The baseline the benchmark compares Switchboard with: what a team would
// build with Socket.IO 4 and @socket.io/redis-adapter. Several of these
// processes share rooms through Redis.
//
//   PORT=3001 REDIS_URL=redis://127.0.0.1:6379 node server.js
//
// Same semantics as Switchboard's protocol, minus durability:
//   emit("join", room, ack)            -> ack({ok: true})
//   emit("send", {room, body}, ack)    -> every member of the room (the sender
//                                         too, on any process) gets
//                                         "message" {room, body}; ack({ok: true})
const { createServer } = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.env.PORT || 3001);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);

  const http = createServer();
  const io = new Server(http, {
    transports: ["websocket"],
    adapter: createAdapter(pub, sub),
    maxHttpBufferSize: 16 * 1024,
  });

  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      if (typeof room !== "string" || room.length === 0) return ack?.({ ok: false });
      socket.join(room);
      ack?.({ ok: true });
    });
    socket.on("send", (msg, ack) => {
      if (!msg || typeof msg.room !== "string" || !socket.rooms.has(msg.room)) return ack?.({ ok: false });
      io.to(msg.room).emit("message", { room: msg.room, body: msg.body });
      ack?.({ ok: true });
    });
  });

  http.listen(port, "127.0.0.1", () => console.log(`socket.io baseline listening on 127.0.0.1:${port}`));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
