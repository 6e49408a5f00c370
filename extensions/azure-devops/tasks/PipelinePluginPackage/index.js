'use strict';
// Package: build the scoring image of a model version; output variables image and digest.
const c = require('./pipeline-plugin-common');
const { tl } = c;
const childProcess = require('child_process');

/** `docker login` with the token on stdin (never on a command line) when a registry token is given. */
function login(image, env) {
  const user = c.input('registryUsername');
  const token = c.secretInput('registryToken');
  if (!token) return;
  if (!user) throw new c.TaskError("input 'registryToken' is set but 'registryUsername' is empty: give both, or neither");
  const first = image.split('/')[0];
  const registry = image.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost') ? first : '';
  const config = require('path').join(c.tempDir(), 'docker-config');
  env.DOCKER_CONFIG = config; // the login lives in this job's temp folder, not in the agent's home
  const res = childProcess.spawnSync('docker', ['login', '--username', user, '--password-stdin', ...(registry ? [registry] : [])],
    { input: token, encoding: 'utf8', env });
  if (res.error || res.status !== 0) {
    throw new c.TaskError(`docker login to ${registry || 'Docker Hub'} as ${user} failed: ${(res.error && res.error.message) || (res.stderr || '').trim()}`);
  }
  console.log(`Logged in to ${registry || 'Docker Hub'} as ${user}`);
}

c.main(async () => {
  const name = c.input('modelName', true);
  const version = c.input('modelVersion', true);
  const repository = c.input('imageRepository', true).replace(/\/+$/, '');
  const env = c.toolEnv(c.storeEnv());
  const cli = await c.install();
  const image = `${repository}/${name.toLowerCase()}:${version.replace(/\+/g, '_')}`;
  const args = ['package', '--model', `${name}:${version}=${c.input('modelUri') || `models:/${name}/${version}`}`, '--image', image];
  c.opt(args, '--entry-script', c.input('entryScript'));
  c.opt(args, '--source-dir', c.input('sourceDir'));
  c.opt(args, '--requirements', c.input('requirements'));
  c.opt(args, '--conda', c.input('conda'));
  c.opt(args, '--base-image', c.input('baseImage'));
  c.opt(args, '--source', c.input('modelSource'));
  c.opt(args, '--registry', c.input('modelRegistry'));
  if (tl.getBoolInput('push', false)) {
    login(image, env);
    args.push('--push');
  }
  const res = await c.runTool(cli, 'package', args, env);
  if (c.failIfFailed('package', res)) return;
  const out = c.resultOutputs(res.data);
  c.setOutputs({ image: out.image || image, digest: out.digest });
  await c.summary(cli, 'package', res.file, env, name, version);
  tl.setResult(tl.TaskResult.Succeeded, `packaged ${out.image || image}`);
});
