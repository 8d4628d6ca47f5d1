// validate-argocd.cjs FILE...: validate Argo CD Applications against the published CRD schema.
//
// Uses the npm package @kubernetes-models/argo-cd (its JSON schema of argoproj.io/v1alpha1
// Application) and js-yaml, installed into the folder named by NODE_PATH_MODELS:
//   npm install --prefix DIR @kubernetes-models/argo-cd@4 js-yaml@4
//   NODE_PATH_MODELS=DIR/node_modules node scripts/validate-argocd.cjs deploy/k8s/argocd/*.yaml
// The schema checks types and required fields; like the CRD it comes from, it lets unknown
// fields through (a misspelt optional key is not caught here).
const path = require("path");
const fs = require("fs");
const modules = process.env.NODE_PATH_MODELS;
const { Application } = require(path.join(modules, "@kubernetes-models/argo-cd/argoproj.io/v1alpha1/Application.js"));
const yaml = require(path.join(modules, "js-yaml"));
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    try { new Application(doc).validate(); console.log(`${file}: ${doc.kind}/${doc.metadata.name} valid`); }
    catch (e) { failed++; console.log(`${file}: INVALID: ${e.message}`); }
  }
}
process.exit(failed ? 1 : 0);
