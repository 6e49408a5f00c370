'use strict';
// Smoke test: check a scoring URI; the JUnit report becomes a test run (##vso[results.publish]),
// output variables smokeTest (passed/failed), scoringUri and junitFile.
const path = require('path');
const c = require('./pipeline-plugin-common');
const { tl } = c;

c.main(async () => {
  const url = c.input('scoringUri', true);
  const sample = tl.getPathInput('sample', true, true);
  const key = c.secretInput('scoringKey');
  const env = c.toolEnv({ ...c.storeEnv(), PIPELINE_PLUGIN_SCORING_KEY: key });
  const cli = await c.install();
  const junit = path.join(c.tempDir(), `pipeline-plugin-smoke-test-${Date.now()}.xml`);
  const args = ['smoke-test', '--url', url, '--sample', sample, '--junit', junit];
  c.opt(args, '--expect', c.input('expect'));
  c.opt(args, '--tolerance', c.input('tolerance'));
  c.opt(args, '--requests', c.input('requests'));
  c.opt(args, '--p99-ms', c.input('p99Ms'));
  c.opt(args, '--max-error-rate', c.input('maxErrorRate'));
  const service = c.input('serviceName');
  if (service) {
    args.push('--name', service);
    c.opt(args, '--env', c.input('environment'));
  }
  c.opt(args, '--target', c.input('target'));
  const res = await c.runTool(cli, 'smoke-test', args, env);
  const passed = res.code === 0 && res.data.passed === true;
  const published = require('fs').existsSync(junit);
  c.setOutputs({ smokeTest: passed ? 'passed' : 'failed', scoringUri: url, junitFile: published ? junit : '' });
  if (published && tl.getBoolInput('publishResults', false)) {
    new tl.TestPublisher('JUnit').publish([junit], 'false', '', '', `pipeline-plugin smoke test ${service || url}`, 'true');
  }
  await c.summary(cli, 'smoke-test', res.file, env);
  if (passed) {
    tl.setResult(tl.TaskResult.Succeeded, `smoke test of ${url} passed`);
  } else if (res.data.failed) {
    tl.setResult(tl.TaskResult.Failed, `smoke test of ${url} failed: ${[].concat(res.data.failed).join(', ')}`);
  } else {
    c.failIfFailed('smoke-test', res.code === 0 ? { ...res, code: 1 } : res);
  }
});
