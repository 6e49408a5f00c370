#!/usr/bin/env node
// Lays the extension out the way tfx packages it and the agent runs it, then (with --vsix) packages it.
//
//   node extensions/azure-devops/build.js --out DIR [--vsix FILE] [--node-modules DIR]
//
// tfx packages every task folder on its own, and the agent runs `node index.js` inside it: so each
// tasks/<Task>/ in DIR gets a copy of common/pipeline-plugin-common.js, the icon, and a node_modules
// with azure-pipelines-task-lib and everything it needs, copied from --node-modules (default: the
// repository's .tools/node_modules, which scripts/setup.sh installs with the pinned versions).
// Nothing is downloaded; `tfx extension create` runs offline.
'use strict';

const fs = require('fs');
const path = require('path');
const childProcess = require('child_process');

const HERE = __dirname;
const ROOT = path.resolve(HERE, '..', '..');

function parseArgs(argv) {
  const args = { nodeModules: path.join(ROOT, '.tools', 'node_modules') };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) usage(`${flag} needs a value`);
    if (flag === '--out') args.out = path.resolve(value);
    else if (flag === '--vsix') args.vsix = path.resolve(value);
    else if (flag === '--node-modules') args.nodeModules = path.resolve(value);
    else usage(`unknown option ${flag}`);
  }
  if (!args.out) usage('--out DIR is required');
  return args;
}

function usage(message) {
  process.stderr.write(`build.js: ${message}\nusage: node build.js --out DIR [--vsix FILE] [--node-modules DIR]\n`);
  process.exit(2);
}

function copy(src, dest) {
  fs.cpSync(src, dest, { recursive: true, dereference: true });
}

/** A package and, recursively, its dependencies, as node would resolve them from `from`. */
function closure(name, from, seen) {
  let dir = from;
  for (;;) {
    const candidate = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) {
      if (seen.has(candidate)) return;
      seen.set(candidate, name);
      const deps = JSON.parse(fs.readFileSync(path.join(candidate, 'package.json'), 'utf8')).dependencies || {};
      for (const dep of Object.keys(deps)) closure(dep, candidate, seen);
      return;
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`${name} is not installed under ${from}: run scripts/setup.sh`);
    dir = parent;
  }
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const manifest = JSON.parse(fs.readFileSync(path.join(HERE, 'vss-extension.json'), 'utf8'));
  fs.rmSync(args.out, { recursive: true, force: true });
  fs.mkdirSync(args.out, { recursive: true });
  for (const file of ['vss-extension.json', 'overview.md', 'images']) copy(path.join(HERE, file), path.join(args.out, file));
  const modulesRoot = path.dirname(args.nodeModules);
  const tasks = manifest.contributions.filter((c) => c.type === 'ms.vss-distributed-task.task').map((c) => c.properties.name);
  for (const task of tasks) {
    const src = path.join(HERE, task);
    const dest = path.join(args.out, task);
    const meta = JSON.parse(fs.readFileSync(path.join(src, 'task.json'), 'utf8'));
    const v = meta.version;
    if (`${v.Major}.${v.Minor}.${v.Patch}` !== manifest.version) {
      throw new Error(`${task}/task.json has version ${v.Major}.${v.Minor}.${v.Patch}, the extension ${manifest.version}: they must match (the task installs pipeline-plugin==its version)`);
    }
    copy(src, dest);
    fs.rmSync(path.join(dest, 'node_modules'), { recursive: true, force: true });
    copy(path.join(HERE, 'common', 'pipeline-plugin-common.js'), path.join(dest, 'pipeline-plugin-common.js'));
    copy(path.join(HERE, 'images', 'icon.png'), path.join(dest, 'icon.png'));
    const seen = new Map();
    const deps = JSON.parse(fs.readFileSync(path.join(src, 'package.json'), 'utf8')).dependencies || {};
    for (const [dep, pinned] of Object.entries(deps)) {
      closure(dep, modulesRoot, seen);
      // the task ships exactly the version its package.json pins (scripts/setup.sh installs it)
      const found = JSON.parse(fs.readFileSync(path.join(args.nodeModules, dep, 'package.json'), 'utf8')).version;
      if (found !== pinned) throw new Error(`${task} pins ${dep}@${pinned} but ${args.nodeModules} has ${found}: run scripts/setup.sh`);
    }
    for (const dir of seen.keys()) {
      // keep the layout npm made (hoisted or nested), relative to the node_modules root
      copy(dir, path.join(dest, path.relative(modulesRoot, dir)));
    }
  }
  console.log(`extension laid out in ${args.out} (${tasks.length} tasks)`);
  if (args.vsix) {
    const tfx = path.join(args.nodeModules, '.bin', 'tfx');
    const res = childProcess.spawnSync(tfx, ['extension', 'create', '--root', args.out, '--manifest-globs', 'vss-extension.json',
      '--output-path', args.vsix, '--no-prompt', '--json'], { encoding: 'utf8' });
    if (res.status !== 0) {
      process.stderr.write(`tfx extension create failed (exit ${res.status}):\n${res.stdout}${res.stderr}`);
      process.exit(1);
    }
    console.log(`packaged ${args.vsix}`);
  }
}

try {
  main();
} catch (err) {
  // a missing or mismatched dependency, a task version that differs from the extension's: exit 2
  process.stderr.write(`build.js: ${err.message}\n`);
  process.exit(2);
}
