#!/usr/bin/env bash
# deploy.sh ENV - the deploy step of the workflows: make the Swarm run what git says for ENV.
#
# Runs on a runner that reaches the Swarm manager (DOCKER_HOST, or the local socket) with the
# release settings in the environment (REGISTRY, IMAGE_REPOSITORY, MLFLOW_TRACKING_URI, ...):
#
#   1. git pull --ff-only: the branch as the promotion left it (its commit is newer than the run's);
#   2. `pipeline reconcile --env ENV` renders deploy/ENV.stack.yaml, applies it and verifies it;
#   3. exit 10 (Swarm rolled the update back; the old digest still serves): `pipeline rollback`
#      with the reason from build/deploy/ENV.reconcile.json, so git says what runs again, then
#      a reconcile that must find the stack in sync; the job fails all the same;
#   4. the rendered stack file (and a rollback) are committed and pushed to BRANCH;
#   5. `pipeline status` goes to the job summary.
set -euo pipefail
env=${1:?usage: deploy.sh staging|production}
case "$env" in staging|production) ;; *) echo "::error::unknown environment '$env'" >&2; exit 2 ;; esac
branch=${BRANCH:-$(git rev-parse --abbrev-ref HEAD)}
summary=${GITHUB_STEP_SUMMARY:-/dev/null}
pipeline=.venv/bin/pipeline

push() {
    for attempt in 1 2 3; do
        git push -q origin "HEAD:${branch}" && return 0
        echo "push ${attempt} was refused: rebasing on origin/${branch}"
        git pull -q --rebase origin "$branch"
    done
    echo "::error::could not push to ${branch}: commit deploy/ by hand"
    return 1
}

commit() {  # commit MESSAGE FILES...: when any of them changed
    local message=$1; shift
    git add -- "$@"
    git diff --cached --quiet && return 0
    git commit -q -m "$message" -m "By the deploy step (run ${GITHUB_RUN_ID:-local})."
    push
}

if git remote get-url origin >/dev/null 2>&1; then
    git pull -q --ff-only origin "$branch" || echo "::warning::could not fast-forward to origin/${branch}"
fi
rendered=("deploy/${env}.stack.yaml" "deploy/${env}.haproxy.cfg")
code=0
"$pipeline" reconcile --env "$env" || code=$?
if [[ $code -eq 10 ]]; then
    reason=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["message"])' "build/deploy/${env}.reconcile.json")
    echo "::error::${reason}"
    "$pipeline" rollback --env "$env" --reason "$reason"
    "$pipeline" reconcile --env "$env"
    commit "deploy(${env}): roll back after a failed rollout" "deploy/${env}.yaml" "${rendered[@]}"
elif [[ $code -eq 0 ]]; then
    digest=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["desired_digest"])' "build/deploy/${env}.reconcile.json" 2>/dev/null || echo "unchanged")
    commit "deploy(${env}): stack rendered for ${digest}" "${rendered[@]}"
fi
"$pipeline" status --env "$env" --markdown "$summary" >/dev/null || true
exit "$code"
