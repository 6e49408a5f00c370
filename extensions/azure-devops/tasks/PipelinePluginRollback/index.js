'use strict';
// Rollback: an environment back to the previous (or a given) version; output variables scoringUri, image, digest, status.
const c = require('./pipeline-plugin-common');
const { tl } = c;

c.main(async () => {
  const service = c.input('serviceName', true);
  const key = c.secretInput('scoringKey');
  const env = c.toolEnv({ ...c.storeEnv(), PIPELINE_PLUGIN_SCORING_KEY: key });
  const cli = await c.install();
  const args = ['rollback', '--name', service];
  c.opt(args, '--env', c.input('environment'));
  c.opt(args, '--to', c.input('toVersion'));
  c.opt(args, '--if-serving', c.input('ifServing'));
  c.opt(args, '--target', c.input('target'));
  c.opt(args, '--reason', c.input('reason'));
  if (tl.getBoolInput('noWriteback', false)) args.push('--no-writeback');
  const res = await c.runTool(cli, 'rollback', args, env);
  const out = c.resultOutputs(res.data);
  c.setOutputs({ scoringUri: out.scoringUri, image: out.image, digest: out.digest, status: res.data.status || '' });
  await c.summary(cli, 'rollback', res.file, env);
  if (c.failIfFailed('rollback', res)) return;
  tl.setResult(tl.TaskResult.Succeeded, `${service}: ${res.data.status || 'rolled back'}`);
});
