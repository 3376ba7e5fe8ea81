// Mutations per client: every mutation must pass the limit for its client
// address and, when it carries credentials, for those credentials too. A
// fresh (unverified) token or cookie therefore buys no fresh budget.
import { credentialScope } from "./canonical.js";
import { LIMITS } from "./config.js";
import { ClientError, log } from "./http/errors.js";

export async function limitMutations(env, base, count) {
  const limiter = env.MUTATION_LIMITER;
  if (!limiter || count === 0) return;
  const scope = await credentialScope(base);
  const keys = [`ip:${base.address}`, ...(scope ? [`c:${scope}`] : [])];
  for (let i = 0; i < count; i++) {
    for (const key of keys) {
      if (!(await allowed(limiter, key))) {
        throw new ClientError(429, "Too many mutations; slow down", "RATE_LIMITED", {
          "retry-after": String(LIMITS.mutationRetryAfterSeconds),
        });
      }
    }
  }
}

async function allowed(limiter, key) {
  try {
    const { success } = await limiter.limit({ key });
    return success;
  } catch (err) {
    log("warn", "rate_limiter_failed", { message: String(err && err.message) });
    return true;
  }
}
