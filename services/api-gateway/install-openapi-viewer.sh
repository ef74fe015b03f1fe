#!/usr/bin/env bash
# Installs the OpenAPI viewer's files (npm package swagger-ui-dist, pinned) where the
# api-gateway serves them from (/api/docs/assets/ ← OPENAPI_VIEWER_DIR). Nothing is
# fetched at build time or by the browser; only this install needs the npm registry.
# Idempotent: an installed copy of the pinned version is left alone.
#
# Usage: services/api-gateway/install-openapi-viewer.sh [PREFIX]
#   PREFIX defaults to .data/swagger-ui, so the files land in the default
#   OPENAPI_VIEWER_DIR (.data/swagger-ui/node_modules/swagger-ui-dist).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=5.35.0
prefix="${1:-.data/swagger-ui}"
dir="$prefix/node_modules/swagger-ui-dist"

if [ -f "$dir/package.json" ] && grep -q "\"version\": \"$VERSION\"" "$dir/package.json"; then
    exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to install the OpenAPI viewer" >&2; exit 1; }
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --silent --save-exact "swagger-ui-dist@$VERSION"
[ -f "$dir/swagger-ui-bundle.js" ] || { echo "swagger-ui-dist installed without its bundle" >&2; exit 1; }
echo "OpenAPI viewer $VERSION installed in $dir"
