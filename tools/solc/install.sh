#!/usr/bin/env bash
# Install the solcjs shim as `solc-v<version>` where py-solc-x and brownie look for compilers
# ($SOLCX_BINARY_PATH, else ~/.solcx). Idempotent: rewrites the launcher only when it changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=$(node -e "console.log(require('$repo/node_modules/solc/package.json').version)")
dest_dir=${SOLCX_BINARY_PATH:-$HOME/.solcx}
dest="$dest_dir/solc-v$version"
mkdir -p "$dest_dir"
launcher="#!/usr/bin/env bash
# fedchain: solcjs $version behind a native solc command line (tools/solc/solc-shim.js)
exec node \"$here/solc-shim.js\" \"\$@\""
if [ ! -x "$dest" ] || [ "$(cat "$dest")" != "$launcher" ]; then
  printf '%s\n' "$launcher" > "$dest"
  chmod +x "$dest"
  echo "installed $dest"
fi
"$dest" --version | grep -q "Version: $version" || { echo "solc shim at $dest does not answer --version" >&2; exit 1; }
