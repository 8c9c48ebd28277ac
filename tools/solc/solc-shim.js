#!/usr/bin/env node
// A native-solc-compatible command line over solcjs (WebAssembly), for py-solc-x and brownie.
// No native solc can be downloaded here, so brownie is pointed at this shim instead (see install.sh).
// Supports what brownie needs: `--version` and `--standard-json` (input on stdin, output on stdout),
// resolving imports against `--base-path`, `--include-path` and `--allow-paths` roots.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require(process.env.FEDCHAIN_SOLCJS || path.join(__dirname, '..', '..', 'node_modules', 'solc'));

function parseArgs(argv) {
  const opts = { roots: [], standardJson: false, version: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const takeValue = () => (a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i]);
    if (a === '--version') opts.version = true;
    else if (a === '--standard-json') opts.standardJson = true;
    else if (a.startsWith('--base-path') || a.startsWith('--include-path')) opts.roots.push(takeValue());
    else if (a.startsWith('--allow-paths')) opts.roots.push(...takeValue().split(','));
  }
  opts.roots = opts.roots.filter(Boolean).map((r) => path.resolve(r));
  opts.roots.push(process.cwd());
  return opts;
}

function makeImportCallback(roots) {
  return (importPath) => {
    const candidates = path.isAbsolute(importPath) ? [importPath] : roots.map((r) => path.join(r, importPath));
    for (const file of candidates) {
      try {
        return { contents: fs.readFileSync(file, 'utf8') };
      } catch (_) {
        /* try the next root */
      }
    }
    return { error: `File not found: ${importPath} (searched ${roots.join(', ')})` };
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.version) {
    // py-solc-x parses the "Version: X.Y.Z+commit..." line.
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return 0;
  }
  if (!opts.standardJson) {
    process.stderr.write('solc-shim: only --version and --standard-json are supported\n');
    return 2;
  }
  const input = fs.readFileSync(0, 'utf8');
  const output = solc.compile(input, { import: makeImportCallback(opts.roots) });
  process.stdout.write(output);
  return 0;
}

process.exitCode = main();
