'use strict';
// Delete: remove a service's environment; output variable status.
const c = require('./pipeline-plugin-common');
const { tl } = c;

c.main(async () => {
  const service = c.input('serviceName', true);
  const environment = c.input('environment', true);
  const env = c.toolEnv(c.storeEnv());
  const cli = await c.install();
  const args = ['delete', '--name', service, '--env', environment];
  c.opt(args, '--target', c.input('target'));
  c.opt(args, '--reason', c.input('reason'));
  if (tl.getBoolInput('confirmProduction', false)) args.push('--yes');
  const res = await c.runTool(cli, 'delete', args, env);
  c.setOutputs({ status: res.data.status || '' });
  if (c.failIfFailed('delete', res)) return;
  tl.setResult(tl.TaskResult.Succeeded, `${service} ${environment}: ${res.data.status || 'deleted'}`);
});
