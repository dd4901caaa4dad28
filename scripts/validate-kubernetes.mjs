// Validates Kubernetes manifests offline against the schemas of the Kubernetes API and of
// KEDA's CRDs (npm: kubernetes-models, @kubernetes-models/keda; `make nodetools`).
//   node scripts/validate-kubernetes.mjs FILE.yaml…
// Prints one line per document; exits 1 if any is invalid or of a kind it has no schema for.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import path from "node:path";

const tools = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../vendor/node");
const require = createRequire(path.join(tools, "package.json"));
const { parseAllDocuments } = require("yaml");
// The models are ES modules, imported by their file in vendor/node.
const resolve = (model) => pathToFileURL(path.join(tools, "node_modules", `${model}.js`)).href;

// apiVersion → the package folder of its models.
function modelPath(apiVersion, kind) {
  if (apiVersion === "keda.sh/v1alpha1") return `@kubernetes-models/keda/keda.sh/v1alpha1/${kind}`;
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

let failed = false;
for (const file of process.argv.slice(2)) {
  const documents = parseAllDocuments(readFileSync(file, "utf8"));
  for (const [index, document] of documents.entries()) {
    const where = `${file}#${index + 1}`;
    if (document.errors.length > 0) {
      console.log(`${where}: not YAML: ${document.errors[0].message}`);
      failed = true;
      continue;
    }
    const manifest = document.toJS();
    if (manifest === null) continue;
    const { apiVersion, kind } = manifest;
    let Model;
    try {
      Model = (await import(resolve(modelPath(apiVersion, kind))))[kind];
    } catch {
      console.log(`${where}: no schema for ${apiVersion} ${kind}`);
      failed = true;
      continue;
    }
    try {
      new Model(manifest).validate();
      console.log(`${where}: ${apiVersion} ${kind} ${manifest.metadata?.name}: valid`);
    } catch (error) {
      console.log(`${where}: ${apiVersion} ${kind} ${manifest.metadata?.name}: ${error.message}`);
      failed = true;
    }
  }
}
process.exit(failed ? 1 : 0);
