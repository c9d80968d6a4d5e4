"""Static security scan with checkov: Dockerfiles, the rendered Kubernetes manifests, and a
secrets scan over docker/, deploy/ and the deployment docs.

checkov has no Docker Compose framework; compose.yaml gets the secrets scan here and its
hardening is asserted in test_deploy_compose.py.

Every suppression must carry a reason: in a Dockerfile as `# checkov:skip=CKV_X: reason`
next to the instruction, in a manifest as the annotation `checkov.io/skipN: "CKV_X=reason"`
on the resource (comments do not survive Kustomize rendering; annotations do).
checkov runs offline (--skip-download): nothing is fetched from its vendor.
"""

from __future__ import annotations

import json
import os
import random
import string
from typing import Any

import pytest
from deploy_helpers import DOCKER, REPO, TARGETS, run

MIN_REASON = 20  # characters: a reason, not a placeholder


def checkov_json(checkov: str, args: list[str]) -> list[dict[str, Any]]:
    env = {**os.environ, "LOG_LEVEL": "ERROR", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
           "BC_SKIP_MAPPING": "TRUE", "ENABLE_DEFINITION_KEY": "False"}
    proc = run([checkov, "--skip-download", "--compact", "-o", "json", *args],
               timeout=300, env=env)
    # exit 1 = failed checks (reported by the callers); no JSON at all is a crash. With several
    # -d/-f and nothing found, checkov prints one summary object per target, back to back.
    reports: list[Any] = []
    decoder, text, pos = json.JSONDecoder(), proc.stdout, 0
    try:
        while text[pos:].strip():
            pos += len(text[pos:]) - len(text[pos:].lstrip())
            obj, pos = decoder.raw_decode(text, pos)
            reports += obj if isinstance(obj, list) else [obj]
    except json.JSONDecodeError:
        reports = []
    if not reports or proc.returncode not in (0, 1):
        pytest.fail(f"checkov failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n"
                    f"{proc.stderr[-4000:]}")
    return [r for r in reports if isinstance(r, dict)]


def failures_and_bad_skips(reports: list[dict[str, Any]]) -> tuple[list[str], list[str], int]:
    failed, bad_skips, passed = [], [], 0
    for r in reports:
        results = r.get("results", {})
        passed += r.get("summary", {}).get("passed", 0)
        for c in results.get("failed_checks", []):
            failed.append(f"{c['check_id']} {c.get('resource')} {c.get('file_path')}: "
                          f"{c.get('check_name')}")
        for c in results.get("skipped_checks", []):
            reason = (c.get("check_result", {}).get("suppress_comment") or "").strip()
            if len(reason) < MIN_REASON:
                bad_skips.append(f"{c['check_id']} {c.get('resource')}: reason {reason!r}")
    return failed, bad_skips, passed


def test_dockerfiles(checkov):
    files = [str(DOCKER / n) for n in ("Dockerfile.api", "Dockerfile.worker", "Dockerfile.proxy")]
    args = ["--framework", "dockerfile"] + [a for f in files for a in ("-f", f)]
    failed, bad_skips, passed = failures_and_bad_skips(checkov_json(checkov, args))
    assert passed > 0, "checkov checked nothing"
    assert not failed, "\n".join(failed)
    assert not bad_skips, "\n".join(bad_skips)


def test_rendered_manifests(checkov, rendered_text, tmp_path):
    for target in TARGETS:
        (tmp_path / f"{target.replace('/', '-')}.yaml").write_text(rendered_text[target])
    reports = checkov_json(checkov, ["--framework", "kubernetes", "-d", str(tmp_path)])
    failed, bad_skips, passed = failures_and_bad_skips(reports)
    assert passed > 100, f"checkov checked too little ({passed} passed)"
    assert not failed, "\n".join(failed)
    assert not bad_skips, "\n".join(bad_skips)


def test_no_secrets_committed(checkov):
    args = ["--framework", "secrets", "-d", str(DOCKER), "-d", str(REPO / "deploy"),
            "-f", str(REPO / "docs" / "deployment.md")]
    failed, bad_skips, _ = failures_and_bad_skips(checkov_json(checkov, args))
    assert not failed, "\n".join(failed)
    assert not bad_skips, "\n".join(bad_skips)


def test_secrets_scan_is_live(checkov, tmp_path):
    """Positive control: the same scan flags a credential (made up at run time, never
    committed), so a clean result above means something."""
    rng = random.Random()
    key = "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    (tmp_path / "leak.yaml").write_text(f"aws_access_key_id: {key}\n")
    failed, _, _ = failures_and_bad_skips(
        checkov_json(checkov, ["--framework", "secrets", "-d", str(tmp_path)]))
    assert failed, "checkov's secrets scan found nothing in a planted key"
