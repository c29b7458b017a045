// validate.mjs — checks every object of a `helm template` output:
//   * each kind maps to its kubernetes-models class (unknown kinds fail) and
//     new Model(obj).validate() must not throw (the Kubernetes OpenAPI schemas);
//   * the standard labels app.kubernetes.io/{name,instance,version,managed-by,component,part-of}
//     and helm.sh/chart are on every object, and on every pod template;
//   * ServiceMonitor/PrometheusRule (and PodMonitor) are present iff --expect-monitoring yes;
//   * every volumeMount of a pod's first container names a volume of the pod;
//   * with --extract DIR, writes the prewarmd config file (prewarmd.json), the API tokens file
//     (tokens, from the Secret), the node-labels
//     go-template (agent-labels.gotmpl) and the scheduler's and agent's container env, args and
//     volume mounts (scheduler.env, agent.env, agent.args, scheduler.mounts, agent.mounts: one
//     per line) to DIR, for scripts/check-helm.sh to feed to the real binaries.
// Usage: node tests/helm/validate.mjs [--expect-monitoring yes|no] [--extract DIR] RENDERED.yaml
// Modules are resolved from .tools/node_modules (scripts/check-helm.sh installs them).
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(path.join(repo, ".tools", "package.json"));
const YAML = require("yaml");
const nodeModules = path.join(repo, ".tools", "node_modules");
// kubernetes-models is ESM-only ("import" exports): load "<pkg>/<group>/index.js" by file URL.
const loadModels = (spec) => import(pathToFileURL(path.join(nodeModules, spec, "index.js")).href);

const models = {
  "v1/ConfigMap": ["kubernetes-models/v1", "ConfigMap"],
  "v1/Secret": ["kubernetes-models/v1", "Secret"],
  "v1/Service": ["kubernetes-models/v1", "Service"],
  "v1/ServiceAccount": ["kubernetes-models/v1", "ServiceAccount"],
  "apps/v1/Deployment": ["kubernetes-models/apps/v1", "Deployment"],
  "apps/v1/DaemonSet": ["kubernetes-models/apps/v1", "DaemonSet"],
  "rbac.authorization.k8s.io/v1/ClusterRole": ["kubernetes-models/rbac.authorization.k8s.io/v1", "ClusterRole"],
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": ["kubernetes-models/rbac.authorization.k8s.io/v1", "ClusterRoleBinding"],
  "rbac.authorization.k8s.io/v1/Role": ["kubernetes-models/rbac.authorization.k8s.io/v1", "Role"],
  "rbac.authorization.k8s.io/v1/RoleBinding": ["kubernetes-models/rbac.authorization.k8s.io/v1", "RoleBinding"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", "ServiceMonitor"],
  "monitoring.coreos.com/v1/PodMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", "PodMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", "PrometheusRule"],
};
const standardLabels = [
  "app.kubernetes.io/name",
  "app.kubernetes.io/instance",
  "app.kubernetes.io/version",
  "app.kubernetes.io/managed-by",
  "app.kubernetes.io/component",
  "app.kubernetes.io/part-of",
  "helm.sh/chart",
];

let expectMonitoring = null;
let extract = null;
const files = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--expect-monitoring") expectMonitoring = argv[++i] === "yes";
  else if (argv[i] === "--extract") extract = argv[++i];
  else files.push(argv[i]);
}
if (files.length !== 1) {
  console.error("usage: node validate.mjs [--expect-monitoring yes|no] RENDERED.yaml");
  process.exit(2);
}

const errors = [];
const counts = {};
let n = 0;
const docs = YAML.parseAllDocuments(readFileSync(files[0], "utf8"));
for (const doc of docs) {
  if (doc.errors.length > 0) {
    errors.push(`YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
    continue;
  }
  const obj = doc.toJS();
  if (obj === null || obj === undefined) continue; // empty document
  n++;
  const id = `${obj.kind ?? "?"}/${obj.metadata?.name ?? "?"}`;
  const key = `${obj.apiVersion}/${obj.kind}`;
  counts[obj.kind] = (counts[obj.kind] ?? 0) + 1;
  const m = models[key];
  if (!m) {
    errors.push(`${id}: unknown kind ${key} (no model)`);
    continue;
  }
  const Model = (await loadModels(m[0]))[m[1]];
  if (typeof Model !== "function") {
    errors.push(`${id}: ${m[0]} has no ${m[1]}`);
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    errors.push(`${id}: schema: ${e.message}${e.errors ? " " + JSON.stringify(e.errors) : ""}`);
  }
  const c = obj.spec?.template?.spec?.containers?.[0];
  // Volume mounts, "MOUNTPATH<TAB>SOURCE<TAB>ro|rw" per line (SOURCE secret:NAME,
  // hostPath:PATH, configMap:NAME, emptyDir:, ...), so that run-rendered.sh puts files (e.g.
  // certificates) where a Secret or host directory would be mounted.
  const vols = Object.fromEntries((obj.spec?.template?.spec?.volumes ?? []).map((v) => {
    if (v.secret) return [v.name, `secret:${v.secret.secretName}`];
    if (v.hostPath) return [v.name, `hostPath:${v.hostPath.path}`];
    if (v.configMap) return [v.name, `configMap:${v.configMap.name}`];
    if (v.persistentVolumeClaim) return [v.name, `pvc:${v.persistentVolumeClaim.claimName}`];
    return [v.name, `${Object.keys(v).find((k) => k !== "name") ?? "?"}:`];
  }));
  for (const m of c?.volumeMounts ?? []) {
    if (!(m.name in vols)) errors.push(`${id}: volumeMount ${m.name} (${m.mountPath}) has no volume`);
  }
  if (extract) {
    const out = (name, text) => writeFileSync(path.join(extract, name), text);
    if (obj.kind === "ConfigMap" && obj.data?.["prewarmd.json"]) out("prewarmd.json", obj.data["prewarmd.json"]);
    if (obj.kind === "ConfigMap" && obj.data?.["agent-labels.gotmpl"]) out("agent-labels.gotmpl", obj.data["agent-labels.gotmpl"]);
    // Plain env values only (valueFrom ones come from the cluster).
    const env = (c?.env ?? []).filter((e) => e.value !== undefined).map((e) => `${e.name}=${e.value}\n`).join("");
    const mounts = (c?.volumeMounts ?? [])
      .map((m) => `${m.mountPath}\t${vols[m.name] ?? "missing:" + m.name}\t${m.readOnly ? "ro" : "rw"}\n`).join("");
    if (obj.kind === "Deployment") {
      out("scheduler.env", env);
      out("scheduler.mounts", mounts);
    }
    if (obj.kind === "Secret" && obj.data?.tokens) out("tokens", Buffer.from(obj.data.tokens, "base64").toString());
    if (obj.kind === "DaemonSet") {
      out("agent.env", env);
      out("agent.args", (c?.args ?? []).map((a) => a + "\n").join(""));
      out("agent.mounts", mounts);
    }
  }
  const check = (labels, where) => {
    for (const l of standardLabels) {
      if (!labels || typeof labels[l] !== "string" || labels[l] === "") {
        errors.push(`${id}: ${where} lacks label ${l}`);
      }
    }
  };
  check(obj.metadata?.labels, "metadata");
  if (obj.spec?.template) check(obj.spec.template.metadata?.labels, "pod template");
  if (obj.spec?.selector?.matchLabels && obj.spec?.template) {
    for (const [k, v] of Object.entries(obj.spec.selector.matchLabels)) {
      if (obj.spec.template.metadata?.labels?.[k] !== v) errors.push(`${id}: selector ${k}=${v} does not match the pod template`);
    }
  }
}
const mon = (counts.ServiceMonitor ?? 0) + (counts.PrometheusRule ?? 0) + (counts.PodMonitor ?? 0);
if (expectMonitoring === true && (counts.ServiceMonitor !== 1 || counts.PrometheusRule !== 1)) {
  errors.push(`expected one ServiceMonitor and one PrometheusRule, got ${mon} monitoring objects`);
}
if (expectMonitoring === false && mon !== 0) errors.push(`expected no monitoring objects, got ${mon}`);
if (n === 0) errors.push("no objects rendered");

const summary = Object.entries(counts).sort().map(([k, v]) => `${k}=${v}`).join(" ");
if (errors.length > 0) {
  for (const e of errors) console.error(`validate: ${e}`);
  console.error(`validate: ${files[0]}: ${n} objects (${summary}), ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`validate: ${n} objects valid, standard labels on all (${summary})`);
