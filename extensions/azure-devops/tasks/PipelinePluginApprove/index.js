'use strict';
// Approve: release (or reject) a promotion held by `promote --require-approval` (the Promote task's
// requireApproval); output variables status, scoringUri, image, digest.
const c = require('./pipeline-plugin-common');
const { tl } = c;

c.main(async () => {
  const run = c.input('runId', true);
  const key = c.secretInput('scoringKey');
  const env = c.toolEnv({ ...c.storeEnv(), PIPELINE_PLUGIN_SCORING_KEY: key });
  const cli = await c.install();
  const args = ['approve', run];
  if (tl.getBoolInput('reject', false)) args.push('--reject');
  c.opt(args, '--by', c.input('approver') || tl.getVariable('Release.RequestedFor') || tl.getVariable('Build.RequestedFor'));
  const res = await c.runTool(cli, 'approve', args, env);
  const out = c.resultOutputs(res.data);
  c.setOutputs({ status: res.data.status || '', scoringUri: out.scoringUri, image: out.image, digest: out.digest });
  if (res.data.status && res.data.status !== 'rejected') await c.summary(cli, 'promote', res.file, env);
  if (c.failIfFailed('approve', res)) return;
  tl.setResult(tl.TaskResult.Succeeded, `run ${run}: ${res.data.status || 'approved'}`);
});
