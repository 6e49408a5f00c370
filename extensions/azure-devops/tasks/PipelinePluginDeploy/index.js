'use strict';
// Deploy: run an image in an environment; output variables scoringUri, image and digest.
const c = require('./pipeline-plugin-common');
const { tl } = c;

c.main(async () => {
  const image = c.input('image', true);
  const service = c.input('serviceName', true);
  const environment = c.input('environment', true);
  const key = c.secretInput('scoringKey');
  const env = c.toolEnv({ ...c.storeEnv(), PIPELINE_PLUGIN_SCORING_KEY: key });
  const cli = await c.install();
  const args = ['deploy', '--image', image, '--name', service, '--env', environment];
  c.opt(args, '--target', c.input('target'));
  c.opt(args, '--port', c.input('port'));
  c.opt(args, '--config', c.input('config'));
  c.opt(args, '--namespace', c.input('namespace'));
  const res = await c.runTool(cli, 'deploy', args, env);
  if (c.failIfFailed('deploy', res)) return;
  const out = c.resultOutputs(res.data);
  c.setOutputs({ scoringUri: out.scoringUri, image: out.image || image, digest: out.digest });
  await c.summary(cli, 'deploy', res.file, env);
  tl.setResult(tl.TaskResult.Succeeded, `${service} ${environment} serves ${out.scoringUri}`);
});
