// Test driver for examples/js/swiftchat.js, run by test_examples.py:
//   node --experimental-websocket js_client_driver.mjs URL NAME [ROOM [HISTORY_LIMIT]]
// Prints one JSON object per line for every event of the client (a message
// carries its source, live or history, as `_source`), and obeys JSON lines on
// stdin: {"send": text}, {"command": [name, ...args]}, {"raw": text},
// {"cache": true}, {"shutdown": [key, reason]}, {"history": {after, before,
// limit, epoch}}, {"older": limit|null}, {"close": true}.
// Exits 0 once the client has closed for good (no reconnect), 1 if the first
// login fails.
import { createInterface } from 'node:readline';
import { SwiftChatClient } from '../../examples/js/swiftchat.js';

const [url, name, room, historyLimit] = process.argv.slice(2);
const print = (event, data) => process.stdout.write(JSON.stringify({ event, data }) + '\n');

const client = new SwiftChatClient(url, {
  name, room: room || null, historyLimit: historyLimit ? Number(historyLimit) : undefined,
});
for (const event of ['room_state', 'shutdown', 'cache_update', 'notice', 'open', 'login', 'login_failed',
  'history', 'resumed']) {
  client.on(event, (data) => print(event, data ?? null));
}
client.on('message', (data, info) => print('message', { ...data, _source: info.source }));
client.on('close', (info) => {
  print('close', info);
  if (!info.reconnect) setTimeout(() => process.exit(0), 50);
});

createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  let ok;
  if ('send' in cmd) ok = client.send(cmd.send);
  else if ('command' in cmd) ok = client.command(...cmd.command);
  else if ('raw' in cmd) ok = client.sendRaw(cmd.raw);
  else if ('cache' in cmd) ok = client.requestCache();
  else if ('shutdown' in cmd) ok = client.shutdownCluster(...cmd.shutdown);
  else if ('history' in cmd) ok = client.requestHistory(cmd.history);
  else if ('older' in cmd) ok = client.loadOlder(cmd.older ?? undefined);
  else if ('close' in cmd) { client.close(); ok = true; }
  print('sent', { cmd, ok });
});

client.connect().then(
  () => print('connected', { prefix: client.prefix, room: client.room }),
  (err) => {
    print('connect_failed', { message: err.message, notice: err.notice ?? null, code: err.code ?? null });
    setTimeout(() => process.exit(1), 50);
  },
);
