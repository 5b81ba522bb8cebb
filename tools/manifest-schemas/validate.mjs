// Validates Kubernetes objects against their published schemas:
//   - built-in kinds: `kubernetes-models` (the Kubernetes OpenAPI schemas),
//   - Istio kinds: `@kubernetes-models/istio` (Istio's CRD schemas),
//   - Prometheus Operator kinds: `@kubernetes-models/prometheus-operator`,
//   - meshward.io custom resources: the openAPIV3Schema of the CRDs found in the same
//     input (what the API server would check), with ajv.
// Usage: node validate.mjs <objects.json>   ([{"source": "...", "object": {...}}, ...])
// Prints one line per object; exits 1 when any is invalid or has no known schema.
// It must run from the folder holding node_modules (.tools/node, set up by
// `cargo xtask setup`); control-plane/tests/manifests copies it there.

import { readFileSync } from "node:fs";
import Ajv from "ajv";

// apiVersion → module exporting the kinds of that group/version.
const MODULES = {
  "v1": "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "policy/v1": "kubernetes-models/policy/v1",
  "rbac.authorization.k8s.io/v1": "kubernetes-models/rbac.authorization.k8s.io/v1",
  "apiextensions.k8s.io/v1": "kubernetes-models/apiextensions.k8s.io/v1",
  "networking.istio.io/v1": "@kubernetes-models/istio/networking.istio.io/v1",
  "networking.istio.io/v1beta1": "@kubernetes-models/istio/networking.istio.io/v1beta1",
  "networking.istio.io/v1alpha3": "@kubernetes-models/istio/networking.istio.io/v1alpha3",
  "extensions.istio.io/v1alpha1": "@kubernetes-models/istio/extensions.istio.io/v1alpha1",
  "install.istio.io/v1alpha1": "@kubernetes-models/istio/install.istio.io/v1alpha1",
  "security.istio.io/v1": "@kubernetes-models/istio/security.istio.io/v1",
  "telemetry.istio.io/v1": "@kubernetes-models/istio/telemetry.istio.io/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate.mjs <objects.json>");
  process.exit(2);
}
const items = JSON.parse(readFileSync(file, "utf8"));

// Custom resources: the CRDs' schemas, by "<group>/<version>" + kind.
const ajv = new Ajv({ strict: false, allErrors: true });
const crdSchemas = new Map();
for (const { object } of items) {
  if (object.kind !== "CustomResourceDefinition") continue;
  for (const version of object.spec?.versions ?? []) {
    const schema = version.schema?.openAPIV3Schema;
    if (schema) {
      crdSchemas.set(`${object.spec.group}/${version.name} ${object.spec.names.kind}`, ajv.compile(schema));
    }
  }
}

let failed = 0;
for (const { source, object } of items) {
  const what = `${source}: ${object.apiVersion} ${object.kind} ${object.metadata?.namespace ?? "-"}/${object.metadata?.name}`;
  const problem = await check(object);
  if (problem) {
    failed++;
    console.log(`INVALID ${what}\n  ${problem.replaceAll("\n", "\n  ")}`);
  } else {
    console.log(`ok      ${what}`);
  }
}
console.log(`${items.length - failed} valid, ${failed} invalid`);
process.exit(failed === 0 ? 0 : 1);

async function check(object) {
  const crd = crdSchemas.get(`${object.apiVersion} ${object.kind}`);
  if (crd) {
    return crd(object) ? null : ajv.errorsText(crd.errors, { separator: "\n" });
  }
  const path = MODULES[object.apiVersion];
  if (!path) return `no schema known for apiVersion ${object.apiVersion} (add it to validate.mjs)`;
  const module = await import(path);
  const Model = module[object.kind];
  if (!Model) return `no schema known for ${object.apiVersion} ${object.kind}`;
  try {
    new Model(object).validate();
    return null;
  } catch (error) {
    return String(error.message ?? error);
  }
}
