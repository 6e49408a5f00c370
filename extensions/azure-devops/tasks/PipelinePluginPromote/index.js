'use strict';
// Promote: staging's smoke-tested image to production (or hold it for the Approve task); output
// variables scoringUri, image, digest, status, runId.
const c = require('./pipeline-plugin-common');
const { tl } = c;

c.main(async () => {
  const service = c.input('serviceName', true);
  const key = c.secretInput('scoringKey');
  const env = c.toolEnv({ ...c.storeEnv(), PIPELINE_PLUGIN_SCORING_KEY: key });
  const cli = await c.install();
  const args = ['promote', '--name', service];
  c.opt(args, '--from', c.input('fromEnvironment'));
  c.opt(args, '--to', c.input('toEnvironment'));
  c.opt(args, '--port', c.input('port'));
  c.opt(args, '--strategy', c.input('strategy'));
  if (c.input('strategy') === 'canary') {
    c.opt(args, '--canary-weight', c.input('canaryWeight'));
    c.opt(args, '--canary-seconds', c.input('canarySeconds'));
  }
  c.opt(args, '--target', c.input('target'));
  if (tl.getBoolInput('noWriteback', false)) args.push('--no-writeback');
  const held = tl.getBoolInput('requireApproval', false);
  if (held) {
    args.push('--require-approval');
    c.opt(args, '--run-id', c.input('runId'));
  }
  const runUrl = runLink();
  if (runUrl) args.push('--run-url', runUrl);
  const res = await c.runTool(cli, 'promote', args, env);
  const out = c.resultOutputs(res.data);
  const runId = res.data.run_id || '';
  c.setOutputs({ scoringUri: out.scoringUri, image: out.image, digest: out.digest, status: res.data.status || '', runId });
  await c.summary(cli, 'promote', res.file, env);
  if (c.failIfFailed('promote', res)) return;
  if (res.data.status === 'pending-approval') {
    tl.setResult(tl.TaskResult.Succeeded, `${service}: held for approval; the Approve task with runId ${runId} carries it out`);
    return;
  }
  tl.setResult(tl.TaskResult.Succeeded, `${service}: ${res.data.status || 'promoted'}`);
});

/** The release (or build) that promoted, written back to the registry with the promotion. */
function runLink() {
  const base = tl.getVariable('System.TeamFoundationCollectionUri');
  const project = tl.getVariable('System.TeamProject');
  if (!base || !project) return '';
  const release = tl.getVariable('Release.ReleaseId');
  if (release) return `${base.replace(/\/+$/, '')}/${encodeURIComponent(project)}/_releaseProgress?releaseId=${encodeURIComponent(release)}`;
  const build = tl.getVariable('Build.BuildId');
  return build ? `${base.replace(/\/+$/, '')}/${encodeURIComponent(project)}/_build/results?buildId=${encodeURIComponent(build)}` : '';
}
