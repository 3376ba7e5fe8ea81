// FraiseQL edge cache: caches GraphQL queries in the Workers Cache API, forwards
// mutations to ORIGIN_URL, invalidates what they return in this data center at
// once and everywhere through a purge-by-tag queue. README.md describes it;
// wrangler bundles this module and the ones it imports into dist/worker.js,
// the one file the Pulumi Edge component uploads.
import { readConfig } from "./config.js";
import { ClientError, errorResponse, log } from "./http/errors.js";
import { consumePurgeBatch } from "./purge/queue.js";
import { handle } from "./router.js";

export default {
  async fetch(request, env, ctx) {
    try {
      return await handle(request, env, ctx);
    } catch (err) {
      if (err instanceof ClientError) return errorResponse(request, err.status, err.message, err.code, err.headers);
      log("error", "unhandled", { message: String(err && err.message), stack: err && err.stack });
      return errorResponse(request, 500, "Internal edge error", "INTERNAL_SERVER_ERROR");
    }
  },

  async queue(batch, env) {
    await consumePurgeBatch(batch, env, readConfig(env));
  },
};
