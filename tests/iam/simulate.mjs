// Reads [{principal, account, action, resource, context, policies, resourcePolicy}] on stdin and
// writes [{result, errors?}] on stdout: one runSimulation per request, identity policies as given.
import { runSimulation } from '@cloud-copilot/iam-simulate'
import { readFileSync } from 'node:fs'

const requests = JSON.parse(readFileSync(0, 'utf8'))
const out = []
for (const r of requests) {
  const res = await runSimulation({
    identityPolicies: r.policies.map((policy, i) => ({ name: `policy${i}`, policy })),
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: r.resourcePolicy,
    request: {
      action: r.action,
      principal: r.principal,
      resource: { accountId: r.account, resource: r.resource },
      contextVariables: r.context || {},
    },
  }, {})
  out.push(res.resultType === 'error' ? { result: 'Error', errors: res.errors } : { result: res.overallResult })
}
process.stdout.write(JSON.stringify(out))
