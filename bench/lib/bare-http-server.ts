/**
 * The floor of what the runtime can do for a plugin request: a bare node:http server on a unix
 * socket that reads the request body and answers every POST with one fixed JSON body (the bytes
 * Ballast returned for a Get). Run as its own process (its own event loop, like the daemon), started
 * by bench/sections/api.ts with the daemon's V8 flags:
 *
 *   node dist/bench/lib/bare-http-server.js SOCKET BODY_FILE
 *
 * Prints "listening" on stdout once it serves; exits on SIGTERM.
 */
import { createServer } from 'node:http';
import { readFileSync, rmSync } from 'node:fs';

const [socket, bodyFile] = process.argv.slice(2);
if (!socket || !bodyFile) {
  process.stderr.write('usage: bare-http-server SOCKET BODY_FILE\n');
  process.exit(2);
}
const body = readFileSync(bodyFile);
const headers = { 'content-type': 'application/json; charset=utf-8', 'content-length': String(body.length) };

const server = createServer((req, res) => {
  req.on('data', () => { /* drain the request, as a real handler must */ });
  req.on('end', () => {
    if (req.method !== 'POST') { res.writeHead(405).end(); return; }
    res.writeHead(200, headers).end(body);
  });
});
rmSync(socket, { force: true });
server.listen(socket, () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
