#!/usr/bin/env bash
# One version number for a release (CONTRIBUTING.md, "Releasing"): the Rust workspace, the agent's
# ESP-IDF component and its PlatformIO library must say the same, or a tag would publish parts
# that disagree about what they are.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo_v=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
idf_v=$(sed -n 's/^version: "\(.*\)"$/\1/p' agent/idf_component.yml | head -1)
pio_v=$(python3 -c 'import json; print(json.load(open("agent/library.json"))["version"])')
if [ -z "$cargo_v" ] || [ "$cargo_v" != "$idf_v" ] || [ "$cargo_v" != "$pio_v" ]; then
  echo "FAIL: versions disagree: Cargo.toml '$cargo_v', agent/idf_component.yml '$idf_v', agent/library.json '$pio_v'" >&2
  exit 1
fi
echo "versions_agree: $cargo_v in Cargo.toml, agent/idf_component.yml and agent/library.json"
