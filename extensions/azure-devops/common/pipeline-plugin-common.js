// Shared by every task of the extension. tfx packages each task folder on its own, so build.js copies
// this file into each task folder (tasks/<Task>/pipeline-plugin-common.js) next to its node_modules;
// index.js requires it from there, as the agent runs it.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const childProcess = require('child_process');
const tl = require('azure-pipelines-task-lib/task');
// the task library's store of inputs and endpoint secrets: read secrets from it directly, because
// tl.getInput and tl.getEndpointAuthorizationParameter write the value into a ##vso[task.debug] line
const im = require('azure-pipelines-task-lib/internal');

const TASK_JSON = require(path.join(__dirname, 'task.json'));
// the extension's version: every task carries it, and it pins the tool the task installs
const VERSION = `${TASK_JSON.version.Major}.${TASK_JSON.version.Minor}.${TASK_JSON.version.Patch}`;
const DEFAULT_SPEC = `pipeline-plugin[mlflow,postgres]==${VERSION}`;
const ENDPOINT_TYPE = 'pipeline-plugin-mlflow';

class TaskError extends Error {}

/** A secret input: masked in the agent's log from here on (##vso[task.setsecret]), '' when empty. */
function secretInput(name) {
  const value = (im._vault.retrieveSecret('INPUT_' + im._getVariableKey(name)) || '').trim();
  if (value) tl.setSecret(value);
  return value;
}

/** A service connection's authorization parameter, masked, never in a debug line. */
function endpointSecret(id, key) {
  const value = im._vault.retrieveSecret('ENDPOINT_AUTH_PARAMETER_' + id + '_' + key.toUpperCase()) || '';
  if (value) tl.setSecret(value);
  return value;
}

function input(name, required) {
  return (tl.getInput(name, Boolean(required)) || '').trim();
}

/** The tool's environment: the agent's, without the task's inputs and TF_BUILD (the task, not the
 * tool, speaks to the agent: it sets the output variables this task.json declares), plus the
 * secrets the tool reads from the environment (never from its command line, which is logged). */
function toolEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('INPUT_') || k.startsWith('ENDPOINT_') || k === 'TF_BUILD' || v === undefined) continue;
    env[k] = v;
  }
  for (const [k, v] of Object.entries(extra || {})) {
    if (v) env[k] = v;
  }
  return env;
}

/** The shared store (databaseUrl input, else $PIPELINE_PLUGIN_DATABASE_URL) and the MLflow service
 * connection, as the tool's environment. */
function storeEnv() {
  const extra = {};
  const db = secretInput('databaseUrl');
  if (db) extra.PIPELINE_PLUGIN_DATABASE_URL = db;
  const stateDir = input('stateDir');
  if (stateDir) extra.PIPELINE_PLUGIN_STATE_DIR = stateDir;
  const connection = input('mlflowConnection');
  if (connection) {
    const url = tl.getEndpointUrl(connection, false);
    if (!url) throw new TaskError(`input 'mlflowConnection' is '${connection}': no such service connection; pick a ${ENDPOINT_TYPE} connection`);
    extra.MLFLOW_TRACKING_URI = url.replace(/\/+$/, '');
    const scheme = (tl.getEndpointAuthorizationScheme(connection, true) || '').toLowerCase();
    if (scheme === 'token') {
      const token = endpointSecret(connection, 'apitoken');
      if (!token) throw new TaskError(`service connection '${connection}' uses token authentication but has no token: edit it and give the MLflow token`);
      extra.MLFLOW_TRACKING_TOKEN = token;
    }
  }
  return extra;
}

function run(file, args, options) {
  const res = childProcess.spawnSync(file, args, { encoding: 'utf8', ...options });
  if (res.error) throw new TaskError(`could not run ${file}: ${res.error.message}`);
  return res;
}

/** pip-installs the tool (the extension's version, or the pluginSpec input) into the Python the
 * job uses (pythonPath input, else python3 on PATH) and returns the path of its CLI. */
async function install() {
  const given = input('pluginSpec'); // a spec the pipeline names is always pip-installed
  const spec = given || DEFAULT_SPEC;
  const python = input('pythonPath') || tl.which('python3', false) || tl.which('python', false);
  if (!python) throw new TaskError("no Python found: add the UsePythonVersion task before this one, or set the input 'pythonPath'");
  if (!given && installedVersion(python) === VERSION) {
    // the job's Python already has this exact version and its extras' packages (a self-hosted
    // agent's earlier run, or an image with it baked in): nothing to install
    console.log(`pipeline-plugin ${VERSION} is already installed for ${python}`);
  } else {
    await pipInstall(python, spec);
  }
  const scripts = run(python, ['-c', 'import sysconfig; print(sysconfig.get_path("scripts"))']).stdout.trim();
  const cli = path.join(scripts, process.platform === 'win32' ? 'pipeline-plugin.exe' : 'pipeline-plugin');
  if (!fs.existsSync(cli)) throw new TaskError(`${spec} is installed but ${cli} is missing`);
  return cli;
}

/** The pipeline-plugin version installed for python when the default extras' modules import too, else ''. */
function installedVersion(python) {
  const probe = "import importlib.metadata as m, importlib.util as u\n" +
    "print(m.version('pipeline-plugin') if all(u.find_spec(n) for n in ('mlflow', 'psycopg')) else '')";
  const res = run(python, ['-c', probe], { env: toolEnv() });
  return res.status === 0 ? res.stdout.trim() : '';
}

async function pipInstall(python, spec) {
  console.log(`Installing ${spec} with ${python}`);
  const code = await tl.tool(python)
    .arg(['-m', 'pip', 'install', '--disable-pip-version-check', '--quiet', spec])
    .exec({ ignoreReturnCode: true, env: toolEnv(), externalOutput: { source: 'childProcess' } });
  if (code !== 0) {
    throw new TaskError(`pip install ${spec} failed (exit ${code}): check the input 'pluginSpec' (a pinned spec, e.g. ${DEFAULT_SPEC}, or a wheel path) and the agent's access to the package index`);
  }
}

/** The first JSON object in the tool's --json output. */
function parseJson(text) {
  const start = text.indexOf('{');
  if (start < 0) return {};
  for (let end = text.lastIndexOf('}'); end > start; end = text.lastIndexOf('}', end - 1)) {
    try {
      return JSON.parse(text.slice(start, end + 1));
    } catch (e) { /* shorter */ }
  }
  return {};
}

/** Runs `pipeline-plugin ARGS --json` (its output shown in the log, ##vso markers neutralized);
 * returns {code, data, file}: the exit code, the parsed result and the file holding it. */
async function runTool(cli, stage, args, env) {
  const tool = tl.tool(cli).arg(args).arg('--json');
  let stdout = '';
  tool.on('stdout', (chunk) => { stdout += chunk.toString(); });
  const code = await tool.exec({ ignoreReturnCode: true, env, externalOutput: { source: 'childProcess' } });
  const file = path.join(tempDir(), `pipeline-plugin-${stage}-${crypto.randomBytes(4).toString('hex')}.json`);
  fs.writeFileSync(file, stdout);
  return { code, data: parseJson(stdout), file };
}

function tempDir() {
  const dir = tl.getVariable('Agent.TempDirectory') || require('os').tmpdir();
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** The glance report (model, version, image digest, checks, outcome) on the run's summary tab. */
async function summary(cli, stage, resultFile, env, model, version) {
  const args = ['ci-summary', '--stage', stage, '--result', resultFile, '--json'];
  if (model) args.push('--model', model);
  if (version) args.push('--version', version);
  const res = run(cli, args, { env });
  const markdown = parseJson(res.stdout || '').summary;
  if (res.status !== 0 || !markdown) {
    tl.warning(`no summary for ${stage}: ${(res.stderr || '').trim()}`);
    return;
  }
  const file = path.join(tempDir(), `pipeline-plugin-${stage}-summary-${crypto.randomBytes(4).toString('hex')}.md`);
  fs.writeFileSync(file, markdown + '\n');
  tl.uploadSummary(file);
}

/** Output variables (isOutput): name -> value; empty values are set too, so a later step never
 * reads a stale one. */
function setOutputs(values) {
  for (const [name, value] of Object.entries(values)) {
    tl.setVariable(name, value === undefined || value === null ? '' : String(value), false, true);
  }
}

/** image, digest and scoringUri from a stage result (digest: the registry digest when pushed, else
 * the local image id, content-addressed too). */
function resultOutputs(data) {
  return {
    image: data.image || data.image_id || '', // promote and rollback name the image by its id
    digest: data.digest || data.image_digest || data.image_id || '',
    scoringUri: data.scoring_uri || '',
  };
}

/** Fails the task with the tool's own message when it failed. */
function failIfFailed(stage, res) {
  if (res.code === 0) return false;
  const why = res.data.message || res.data.reason || res.data.error || `exit code ${res.code}`;
  tl.setResult(tl.TaskResult.Failed, `pipeline-plugin ${stage} failed: ${why}`);
  return true;
}

/** Runs the task body; any error becomes the task's failure with its message. */
function main(body) {
  body().catch((err) => {
    tl.setResult(tl.TaskResult.Failed, err instanceof TaskError ? err.message : `pipeline-plugin task crashed: ${err && err.stack || err}`);
  });
}

/** Adds `flag value` when value is not empty. */
function opt(args, flag, value) {
  if (value !== undefined && value !== null && String(value) !== '') args.push(flag, String(value));
}

module.exports = {
  tl, VERSION, DEFAULT_SPEC, TaskError, input, secretInput, toolEnv, storeEnv, install, runTool, summary,
  setOutputs, resultOutputs, failIfFailed, main, opt, tempDir,
};
