// Checks deploy/docker-compose.yml against the services it runs:
//   node check.mjs COMPOSE_FILE BUILD_DIR
// - the file parses as YAML (merge keys resolved, as Compose does) and has
//   the services nats, timescaledb, sim-engine, signal-service,
//   agent-service and orchestrator;
// - each of the four Microcloud services runs its own binary (command);
// - every environment variable the file sets for one of them exists in that
//   service's configuration table, read from `<binary> --help` in BUILD_DIR
//   (the tables the binaries load, so a typo or a renamed variable, which
//   the service would silently ignore, fails here).
// Prints one "FAIL: ..." line per problem; exit 0 when none, 1 otherwise,
// 77 (skipped) when the `yaml` package is not installed (npm ci).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const [composeFile, buildDir] = process.argv.slice(2);
if (!composeFile || !buildDir) {
  console.error('usage: check.mjs COMPOSE_FILE BUILD_DIR');
  process.exit(2);
}

let YAML;
try {
  YAML = await import('yaml');
} catch {
  console.error('SKIP: the yaml package is not installed (run npm ci in the repository root)');
  process.exit(77);
}

const binaries = {
  'sim-engine': 'engine/sim-engine',
  'signal-service': 'pipeline/signal-service',
  'agent-service': 'pipeline/agent-service',
  orchestrator: 'gateway/orchestrator/orchestrator',
};
const expected = ['nats', 'timescaledb', ...Object.keys(binaries)];

let fails = 0;
const fail = (msg) => {
  console.error(`FAIL: ${msg}`);
  fails++;
};

// The variable names of a binary's configuration table: the first column of
// the rows under the "VARIABLE DEFAULT DESCRIPTION" header of --help.
function configVariables(binary) {
  const help = execFileSync(binary, ['--help'], { encoding: 'utf8', timeout: 10000 });
  const lines = help.split('\n');
  const start = lines.findIndex((l) => /^\s+VARIABLE\s+DEFAULT\s+DESCRIPTION\s*$/.test(l));
  if (start < 0) throw new Error(`${binary} --help has no configuration table`);
  const names = new Set();
  for (const line of lines.slice(start + 1)) {
    const m = /^\s+([A-Z][A-Z0-9_]*)\s/.exec(line);
    if (!m) break;
    names.add(m[1]);
  }
  if (names.size === 0) throw new Error(`${binary} --help lists no variables`);
  return names;
}

// Compose accepts environment as a map or as a list of "NAME=value" / "NAME".
function environmentNames(env) {
  if (env == null) return [];
  if (Array.isArray(env)) return env.map((e) => String(e).split('=')[0]);
  if (typeof env === 'object') return Object.keys(env);
  throw new Error(`environment is neither a map nor a list: ${JSON.stringify(env)}`);
}

const text = readFileSync(composeFile, 'utf8');
const doc = YAML.parseDocument(text, { merge: true, prettyErrors: true });
if (doc.errors.length > 0) {
  for (const e of doc.errors) fail(`${composeFile} is not valid YAML: ${e.message}`);
  process.exit(1);
}
const compose = doc.toJS({ maxAliasCount: 100 });
const services = compose?.services;
if (services == null || typeof services !== 'object') {
  fail(`${composeFile} has no services`);
  process.exit(1);
}
for (const name of expected) {
  if (!(name in services)) fail(`service ${name} is missing from ${composeFile}`);
}
for (const name of Object.keys(services)) {
  if (!expected.includes(name)) fail(`unexpected service ${name} (expected ${expected.join(', ')})`);
}

for (const [name, path] of Object.entries(binaries)) {
  const svc = services[name];
  if (svc == null) continue;
  const binary = join(buildDir, path);
  if (!existsSync(binary)) {
    fail(`${binary} is not built`);
    continue;
  }
  const command = Array.isArray(svc.command) ? svc.command[0] : String(svc.command ?? '').split(/\s+/)[0];
  const base = path.split('/').pop();
  if (command !== base) fail(`service ${name} runs "${command ?? ''}" (expected ${base})`);
  if (svc.image == null && svc.build == null) fail(`service ${name} has neither image nor build`);
  let known;
  try {
    known = configVariables(binary);
  } catch (e) {
    fail(`${name}: ${e.message}`);
    continue;
  }
  const names = environmentNames(svc.environment);
  if (names.length === 0) fail(`service ${name} sets no environment (NATS_URL at least is needed)`);
  for (const v of names) {
    if (!known.has(v)) fail(`service ${name} sets ${v}, which is not in its configuration table (${base} --help)`);
  }
  console.log(`ok: ${name}: ${names.length} variable(s) set, all in the ${known.size}-row table of ${base}`);
}

if (fails > 0) {
  console.error(`deploy_compose: ${fails} problem(s) in ${composeFile}`);
  process.exit(1);
}
console.log(`deploy_compose: ${composeFile} is consistent with the four services`);
