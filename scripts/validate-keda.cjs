// validate-keda.cjs FILE...: validate KEDA ScaledObjects against the published CRD schema.
//
// Uses the npm package @kubernetes-models/keda (its JSON schema of keda.sh/v1alpha1
// ScaledObject) and js-yaml, installed into the folder named by NODE_PATH_MODELS:
//   npm install --prefix DIR @kubernetes-models/keda@2 js-yaml@4
//   NODE_PATH_MODELS=DIR/node_modules node scripts/validate-keda.cjs deploy/k8s/overlays/*/scaledobject.yaml
// Types, enums and required fields; like the CRD, unknown fields pass.
const path = require("path");
const fs = require("fs");
const modules = process.env.NODE_PATH_MODELS;
const { ScaledObject } = require(path.join(modules, "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js"));
const yaml = require(path.join(modules, "js-yaml"));
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    try { new ScaledObject(doc).validate(); console.log(`${file}: ${doc.kind}/${doc.metadata.name} valid`); }
    catch (e) { failed++; console.log(`${file}: INVALID: ${e.message}`); }
  }
}
process.exit(failed ? 1 : 0);
